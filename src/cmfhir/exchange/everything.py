"""`Patient/[id]/$everything` (https://hl7.org/fhir/R4/patient-operation-everything.html):
the Patient, its compartment, and the Practitioners, Organizations, Locations, Medications
and Questionnaires those resources reference, one page at a time in storage order (a page
is `_count` resources of the compartment plus what they reference, `search.mode`
include). A member's own token may fetch their own record."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from cmfhir.errors import BadRequest, NotFound
from cmfhir.exchange.access import Forbidden
from cmfhir.interactions.audit_store import refuse_bulk
from cmfhir.interactions.bundles import link, search_bundle
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.index_values import date_range
from cmfhir.search import parse_instant
from cmfhir.store.exchange import compartment_page

__all__ = ["CARE_DATES", "REFERENCED", "bound", "everything", "run"]

# The types brought along when the record references them.
REFERENCED = frozenset({"Practitioner", "Organization", "Location", "Medication", "Questionnaire"})

# Each compartment type's care date, by its search parameter: what start/end filter on.
CARE_DATES = (
    ("AllergyIntolerance", "date"),
    ("Appointment", "date"),
    ("CarePlan", "date"),
    ("CareTeam", "date"),
    ("Claim", "created"),
    ("ClinicalImpression", "date"),
    ("Communication", "sent"),
    ("Composition", "date"),
    ("Condition", "onset-date"),
    ("DetectedIssue", "identified"),
    ("DiagnosticReport", "date"),
    ("DocumentReference", "date"),
    ("Encounter", "date"),
    ("EpisodeOfCare", "date"),
    ("ExplanationOfBenefit", "created"),
    ("Flag", "date"),
    ("Goal", "start-date"),
    ("Immunization", "date"),
    ("MedicationAdministration", "effective-time"),
    ("MedicationDispense", "whenhandedover"),
    ("MedicationRequest", "authoredon"),
    ("MedicationStatement", "effective"),
    ("Observation", "date"),
    ("Procedure", "date"),
    ("QuestionnaireResponse", "authored"),
    ("RiskAssessment", "date"),
    ("ServiceRequest", "authored"),
    ("Task", "authored-on"),
)


def _references(value: Any, found: set[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.count("/") == 1:
            kind, _, id = reference.partition("/")
            if kind in REFERENCED and id:
                found.add((kind, id))
        for item in value.values():
            _references(item, found)
    elif isinstance(value, list):
        for item in value:
            _references(item, found)


def _date(call: OperationCall, name: str, *, end: bool) -> datetime | None:
    """`start` from the beginning of its day (month, year), `end` to the end of its own."""
    raw = call.value(name)
    if raw is None:
        return None
    try:
        low, high = date_range(str(raw))
    except ValueError:
        raise BadRequest(f"'{name}' must be a date (YYYY-MM-DD)", expression=[name]) from None
    return high if end else low


def bound(value: int | None, ctx: FhirContext) -> int:
    if value is None:
        return ctx.limits.default_count
    if value < 1:
        raise BadRequest("_count must be 1 or more", expression=["_count"])
    return min(value, ctx.limits.max_count)


def _check_access(ctx: FhirContext, patient_id: str) -> None:
    principal = ctx.principal
    if principal.kind == "patient" and principal.patient != patient_id:
        raise Forbidden("A member's token may fetch only that member's record")


async def everything(ctx: FhirContext, call: OperationCall, *, base: str) -> Result:
    patient_id = str(call.id)
    _check_access(ctx, patient_id)
    types = None
    raw_types = [
        str(v)
        for p in call.parameters.get("parameter", [])
        if p["name"] == "_type"
        for k, v in p.items()
        if k.startswith("value")
    ]
    if raw_types:
        types = sorted({t.strip() for raw in raw_types for t in raw.split(",") if t.strip()})
        for kind in types:
            refuse_bulk(kind, "_type")
    since_raw = call.value("_since")
    since = parse_instant("_since", str(since_raw)) if since_raw is not None else None
    start = _date(call, "start", end=False)
    end = _date(call, "end", end=True)
    count = bound(call.value("_count"), ctx)
    cursor_raw = call.value("_cursor")
    after = 0
    if cursor_raw is not None:
        if not str(cursor_raw).isdigit():
            raise BadRequest("_cursor is not one this server gave", expression=["_cursor"])
        after = int(str(cursor_raw))
    care = CARE_DATES if (start is not None or end is not None) else None
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
        stored = await repo.read("Patient", patient_id)
        if stored is None or stored.deleted:
            raise NotFound(f"Patient/{patient_id} is not known")
        rows = await compartment_page(
            repo,
            patient_id,
            after=after,
            limit=count + 1,
            types=types,
            since=since,
            care=care,
            start=start or datetime.min.replace(tzinfo=UTC),
            end=end or datetime.max.replace(tzinfo=UTC),
        )
        more = len(rows) > count
        rows = rows[:count]
        wanted: set[tuple[str, str]] = set()
        for _, _, _, content in rows:
            _references(parse_json(content), wanted)
        wanted -= {(t, i) for _, t, i, _ in rows}
        if types is not None:
            wanted = {(t, i) for t, i in wanted if t in types}
        included = await repo.read_many(sorted(wanted))
    echo = [
        (p["name"], str(v))
        for p in call.parameters.get("parameter", [])
        if p["name"] != "_cursor"
        for k, v in p.items()
        if k.startswith("value")
    ]
    path = f"Patient/{patient_id}/$everything"
    links = {"self": link(base, path, [*echo, *([("_cursor", str(after))] if after else [])])}
    if more:
        links["next"] = link(base, path, [*echo, ("_cursor", str(rows[-1][0]))])
    body = search_bundle(
        base,
        [(t, i, c) for _, t, i, c in rows],
        included=[(t, i, c) for (t, i), c in sorted(included.items())],
        total=None,
        links=links,
        warnings=[],
    )
    return Result(200, body)


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    """The registered implementation: links relative to the base when the caller did not
    bind one (routes/bulk.py binds the request's base with `bound_to`)."""
    return await everything(ctx, call, base="")


def bound_to(base: str) -> Any:
    return functools.partial(everything, base=base)
