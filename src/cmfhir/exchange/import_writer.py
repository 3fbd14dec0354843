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

A line is made ready where it is read (`check_line` with the server's `Definitions`, in the
import's validating processes when it has them): validated, stamped, indexed, its member
found and its JSON text made, so that the writer only stamps it with the database clock and
COPYs it (`store.bulk.create_many`). A line that names a resource that exists already is
made a new version of it the ordinary way (`to_version`, `Repository.write`) in the same
transaction, as are the types a write hook changes (Subscription).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cmfhir.errors import NotFound
from cmfhir.interactions import process_bundle
from cmfhir.interactions.audit_store import refuse_write
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, utcnow
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.references import holders, is_conditional, is_placeholder
from cmfhir.interactions.versions import new_id, stamp, to_version
from cmfhir.resources.compartment import PatientCompartment, patient_compartment
from cmfhir.resources.fhir_versions import VERSIONS, check_type_in_version
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion
from cmfhir.store.bulk import BulkVersion, create_many, index_row_tuples
from cmfhir.store.many import lock_or_claim_many

__all__ = ["Definitions", "Line", "check_line", "line_version", "write_lines"]

# The stamp a line is made ready with; the writer stamps it again with the database clock
# (no search parameter indexes meta.versionId or meta.lastUpdated).
_UNSTAMPED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Definitions:
    """What making a line ready needs: the search parameters, the Patient compartment, and
    the types a write hook changes (left to the writer)."""

    registry: SearchParameterRegistry
    compartment: PatientCompartment
    hooked: frozenset[str]


@dataclass(slots=True)
class Line:
    """A line read and validated: its number in the source, its `Type/id` when it has an
    id, and either its resource or the version made ready from it (`ready`)."""

    number: int
    key: tuple[str, str] | None
    resource: dict[str, Any] | None = None
    ready: BulkVersion | None = None
    # Whether a reference in it needs resolving as a transaction entry's does.
    resolve: bool = False

    def as_resource(self) -> dict[str, Any]:
        if self.resource is not None:
            return self.resource
        assert self.ready is not None
        resource: dict[str, Any] = parse_json(self.ready.content(1, "1970-01-01T00:00:00.000Z"))
        return resource


def line_version(resource_type: str, version: str) -> str:
    """The FHIR version a line of `resource_type` is read in (see the module's text);
    404 (NotFound) for a type the server serves in no version; 405 for AuditEvent, which
    the server's audit trail alone records."""
    require_type(resource_type)
    refuse_write(resource_type)
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


def check_line(
    version: str, number: int, raw: bytes, definitions: Definitions | None = None
) -> Line:
    """Parse and validate one line, the import being in FHIR `version` (ValueError for
    what is not a resource at all); with `definitions`, made ready to store (FhirError
    when it cannot be indexed)."""
    resource = parse_json(raw)
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise ValueError("The line is not a FHIR resource (no resourceType)")
    kind = resource["resourceType"]
    validate_for_version(resource, line_version(kind, version), expected_type=kind)
    id = resource.get("id")
    if isinstance(id, str):
        check_id(id)
    key = (kind, id) if isinstance(id, str) else None
    resolve = any(
        is_placeholder(ref["reference"]) or is_conditional(ref["reference"])
        for ref in holders(resource)
    )
    if definitions is None or resolve or kind in definitions.hooked:
        return Line(number, key, resource=resource, resolve=resolve)
    return Line(number, key, ready=_ready(resource, definitions))


def _ready(resource: dict[str, Any], definitions: Definitions) -> BulkVersion:
    """What `to_version` makes of a new resource, but for the stamp (`BulkVersion`)."""
    kind = resource["resourceType"]
    id = resource.get("id")
    if not isinstance(id, str):
        id = new_id()
    served = stamp(resource, id, 1, _UNSTAMPED)
    index = extract_index(served, definitions.registry)
    patients = patient_compartment(served, definitions.compartment, index)
    # The text of `served` around its meta: `stamp` puts resourceType, id and meta first.
    head = dump_json({"resourceType": kind, "id": id}).decode()[:-1]
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    tail = "," + dump_json(rest).decode()[1:] if rest else "}"
    return BulkVersion(
        resource_type=kind,
        id=id,
        head=head,
        meta=dict(resource.get("meta") or {}),
        tail=tail,
        patient_id=patients[0] if patients else None,
        rows=index_row_tuples(kind, index),
    )


async def _as_entry(ctx: FhirContext, line: Line, base: str) -> None:
    resource = line.as_resource()
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
        fresh = [
            line.ready
            for line in lines
            if line.ready is not None and (line.key is None or line.key not in locked)
        ]
        created = await create_many(repo, fresh)
        now = utcnow()  # after the locks: never earlier than the version it follows
        records: list[NewVersion] = []
        for line in lines:
            key = line.key
            if line.ready is not None and (key is None or key not in locked):
                continue  # created above
            current = locked.get(key) if key is not None else None
            resource = line.as_resource()
            record, _ = to_version(
                ctx,
                resource,
                id=key[1] if key is not None else resource.get("id") or new_id(),
                version=1 if current is None else current.version + 1,
                now=now,
                method="create" if current is None or current.deleted else "update",
                rid=None if current is None else current.rid,
            )
            records.append(record)
        await repo.write(records)
        responses = ResponseChecker(ctx, repo)
        for record in [*created, *records]:
            await responses.check(record)
