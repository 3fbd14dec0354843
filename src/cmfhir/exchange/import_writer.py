"""Storing a batch of imported lines in one database transaction, through the store's own
write path for transactions (`store.many.lock_or_claim_many`, `versions.to_version`,
`Repository.write`, the QuestionnaireResponse check): each line was validated once when it
was read (`check_line`), and is here versioned (a `PUT Type/id` on a resource that exists is
its next version), indexed and written with the others in a few statements whatever the
batch's size, committed before the batch is reported done.

What a transaction Bundle does beyond that is not needed for NDJSON, whose lines are
resources with final `Type/id` references: no fullUrl to resolve, no entry order, no
conditional search. A line that needs one (a `urn:uuid:` or a conditional reference) is
written as a one-entry transaction Bundle (`process_bundle`), which resolves or refuses it
as a `POST /` would.

Which FHIR version a line is read in: the import's (the request's, R4 for `cmfhir import`),
except a type that exists only in the other version the server serves (R4B's
SubscriptionTopic in an R4 import), which is read in that one, as the content loader does:
what an export wrote comes back in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmfhir.errors import NotFound
from cmfhir.interactions import process_bundle
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, utcnow
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.references import holders, is_conditional, is_placeholder
from cmfhir.interactions.versions import new_id, to_version
from cmfhir.resources.fhir_versions import VERSIONS, check_type_in_version
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion
from cmfhir.store.many import lock_or_claim_many

__all__ = ["Line", "check_line", "line_version", "write_lines"]


@dataclass(slots=True)
class Line:
    """A line read and validated: its number in the source and its resource."""

    number: int
    resource: dict[str, Any]
    # Whether a reference in it needs resolving as a transaction entry's does.
    resolve: bool = False

    @property
    def key(self) -> tuple[str, str] | None:
        id = self.resource.get("id")
        return (self.resource["resourceType"], id) if isinstance(id, str) else None


def line_version(resource_type: str, version: str) -> str:
    """The FHIR version a line of `resource_type` is read in (see the module's text);
    404 (NotFound) for a type the server serves in no version."""
    require_type(resource_type)
    try:
        check_type_in_version(resource_type, version)
        return version
    except NotFound:
        for other in VERSIONS:
            if other != version:
                try:
                    check_type_in_version(resource_type, other)
                    return other
                except NotFound:
                    continue
        raise


def check_line(version: str, number: int, raw: bytes) -> Line:
    """Parse and validate one line, the import being in FHIR `version` (ValueError for
    what is not a resource at all)."""
    resource = parse_json(raw)
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise ValueError("The line is not a FHIR resource (no resourceType)")
    kind = resource["resourceType"]
    validate_for_version(resource, line_version(kind, version), expected_type=kind)
    if isinstance(resource.get("id"), str):
        check_id(resource["id"])
    resolve = any(
        is_placeholder(ref["reference"]) or is_conditional(ref["reference"])
        for ref in holders(resource)
    )
    return Line(number, resource, resolve)


async def _as_entry(ctx: FhirContext, line: Line, base: str) -> None:
    resource = line.resource
    kind = resource["resourceType"]
    if line.key is not None:
        url = f"{kind}/{line.key[1]}"
        entry = {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}
    else:
        entry = {"resource": resource, "request": {"method": "POST", "url": kind}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    await process_bundle(
        ctx.for_request(line_version(kind, ctx.fhir_version)),
        bundle,
        base=base,
        representation=False,
    )


async def write_lines(ctx: FhirContext, lines: list[Line], base: str) -> None:
    """Write `lines` (validated, no two with the same Type/id, and a line to `resolve`
    only alone) in one transaction of `ctx.store`; any failure (FhirError) rolls all of
    them back."""
    if len(lines) == 1 and lines[0].resolve:
        await _as_entry(ctx, lines[0], base)
        return
    keys = [line.key for line in lines if line.key is not None]
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        locked = await lock_or_claim_many(repo, keys, claim=keys)
        now = utcnow()  # after the locks: never earlier than the version it follows
        records: list[NewVersion] = []
        for line in lines:
            key = line.key
            current = locked.get(key) if key is not None else None
            record, _ = to_version(
                ctx,
                line.resource,
                id=key[1] if key is not None else new_id(),
                version=1 if current is None else current.version + 1,
                now=now,
                method="create" if current is None or current.deleted else "update",
                rid=None if current is None else current.rid,
            )
            records.append(record)
        await repo.write(records)
        responses = ResponseChecker(ctx, repo)
        for record in records:
            await responses.check(record)
