"""The resources the server holds from the start: every `profiles/content/<Type>-<id>.json`
(Questionnaires, CodeSystems, ValueSets, StructureDefinitions, SearchParameters, Measures,
SubscriptionTopics...) written into the store at start and by `cmfhir content load`.

Idempotent, by id: a resource missing from the store (never written, or deleted) is
created, one whose content differs from its file gets a new version, any other is left
alone. Writes go through the update interaction (validated, indexed, versioned, in the
outbox), all in one transaction that first takes a lock of its own, so servers starting together
load once and the others find nothing to do. Only what is written is validated, so a restart
with nothing changed costs one read. A file that does not validate is not written (the others
are) and is reported: logged at start, and `cmfhir content load` exits 2 naming it. A file
named unlike its resource, or not JSON, stops the load. Files are FHIR R4 unless the type
exists only in R4B (SubscriptionTopic).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError, NotFound
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.update import update_in
from cmfhir.resources.fhir_versions import R4, R4B, check_type_in_version
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.version_validation import validate_for_version

__all__ = ["CONTENT_DIR", "ContentError", "ContentReport", "load_content", "read_content"]

log = logging.getLogger("cmfhir.content")

CONTENT_DIR = "content"
# Definitions first, so what refers to them by canonical finds them written.
_FIRST = ("CodeSystem", "ValueSet", "StructureDefinition", "SearchParameter", "Questionnaire")
_SERVER_META = ("versionId", "lastUpdated")
_LOADING = ("cmfhir", "content-load")


class ContentError(ValueError):
    """A content file that cannot be loaded; the message names the file and why."""


@dataclass(slots=True)
class ContentReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Files that do not validate, with why: not written, the others are.
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    resource: dict[str, Any]
    version: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource["resourceType"], self.resource["id"])

    @property
    def label(self) -> str:
        return "/".join(self.key)


def _version_of(resource_type: str) -> str:
    try:
        check_type_in_version(resource_type, R4)
        return R4
    except NotFound:
        return R4B


def _validate(f: _File) -> None:
    try:
        validate_for_version(f.resource, f.version, expected_type=f.key[0])
    except FhirError as error:
        where = "; ".join(f"{i.diagnostics} ({', '.join(i.expression)})" for i in error.issues[:5])
        raise ContentError(f"{f.path.name}: {where}") from error


def _files(folder: Path) -> list[_File]:
    files: list[_File] = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            resource = parse_json(path.read_bytes())
        except (OSError, FhirError, ValueError) as error:
            raise ContentError(f"{path.name}: not readable FHIR JSON ({error})") from error
        if not isinstance(resource, dict):
            raise ContentError(f"{path.name}: not a FHIR resource")
        kind, id = resource.get("resourceType"), resource.get("id")
        if not isinstance(kind, str) or not isinstance(id, str) or path.stem != f"{kind}-{id}":
            raise ContentError(
                f"{path.name}: the file of {kind}/{id} must be named {kind}-{id}.json"
            )
        files.append(_File(path, resource, _version_of(kind)))
    files.sort(
        key=lambda f: (
            _FIRST.index(f.key[0]) if f.key[0] in _FIRST else len(_FIRST),
            f.path.name,
        )
    )
    return files


def read_content(folder: Path) -> list[tuple[Path, dict[str, Any], str]]:
    """The content files of `folder`, parsed and validated, definitions first: (path,
    resource, FHIR version). Raises ContentError naming the file at fault."""
    files = _files(folder)
    for f in files:
        _validate(f)
    return [(f.path, f.resource, f.version) for f in files]


def _comparable(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server stamps on each version."""
    out = dict(resource)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in _SERVER_META}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


async def load_content(ctx: FhirContext, folder: Path) -> ContentReport:
    """Write the content of `folder` that the store lacks or holds otherwise."""
    files = _files(folder)
    report = ContentReport()
    if not files:
        return report
    trusted = replace(ctx, principal=TRUSTED)
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        # Racing loaders (servers starting together) take turns on this name (no resource
        # has it); the later ones find the content written and change nothing.
        await repo.lock_or_claim([_LOADING])
        stored = await repo.read_many([f.key for f in files])
        for f in files:
            current = stored.get(f.key)
            if current is not None and _comparable(parse_json(current)) == _comparable(f.resource):
                report.unchanged.append(f.label)
                continue
            # Only what is written is validated: what the store holds already was, and
            # validating every file at each start would cost seconds.
            try:
                _validate(f)
            except ContentError as error:
                log.warning("content file not loaded: %s", error)
                report.refused.append(str(error))
                continue
            try:
                await update_in(
                    replace(trusted, fhir_version=f.version), repo, f.resource, f.key[1]
                )
            except FhirError as error:
                raise ContentError(f"{f.path.name}: {error.diagnostics}") from error
            (report.updated if current is not None else report.created).append(f.label)
    return report
