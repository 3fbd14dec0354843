"""`Measure/$care-gaps` (Da Vinci DEQM 5.0.0,
https://hl7.org/fhir/us/davinci-deqm/STU5/OperationDefinition-care-gaps.html): the care
gaps of a set of members as one Gaps In Care document Bundle per member
(gaps/care_gaps_document.py). Answered from the DetectedIssues the engine keeps
(gaps/engine.py); each rule is a Measure in profiles/content/Measure-<rule>.json, and the
rule's program (profiles/care-gaps.json) is what the `program` parameter selects."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from cmfhir.errors import BadRequest
from cmfhir.gaps import detected_issue as di
from cmfhir.gaps.care_gaps_document import GapsReport, document, references
from cmfhir.gaps.config import CareGapConfig, load_config
from cmfhir.interactions.context import FhirContext, Result, instant, utcnow
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.resources.fhirjson import parse_json
from cmfhir.search.parse import parse_search
from cmfhir.store import Repository

__all__ = ["load_measures", "runner"]

_STATUSES = ("open-gap", "closed-gap", "prospective-gap")
_CHUNK = 100  # members per search (values of one OR'd parameter)


@lru_cache(maxsize=4)
def load_measures(profiles_dir: Path) -> tuple[dict[str, Any], ...]:
    """The care-gap Measures (one per rule) in profiles/content/, by file name."""
    found = []
    for path in sorted((profiles_dir / "content").glob("Measure-*.json")):
        measure = json.loads(path.read_text(encoding="utf-8"))
        if any(i.get("system") == di.CARE_GAP_SYSTEM for i in measure.get("identifier", [])):
            found.append(measure)
    return tuple(found)


def _strings(call: OperationCall, name: str) -> list[str]:
    values = [
        p.get("valueString", p.get("valueCanonical", p.get("valueCode")))
        for p in call.parameters.get("parameter", [])
        if p.get("name") == name
    ]
    for value in values:
        if not isinstance(value, str) or not value:
            raise BadRequest(
                f"Parameter '{name}' of $care-gaps must be a string", expression=[name]
            )
    return [v for part in values for v in part.split(",")]


def _date(call: OperationCall, name: str) -> date:
    value = call.value(name)
    try:
        return date.fromisoformat(str(value))
    except ValueError as error:
        raise BadRequest(
            f"Parameter '{name}' of $care-gaps must be a date (YYYY-MM-DD)", expression=[name]
        ) from error


def _reference(call: OperationCall, name: str, types: tuple[str, ...]) -> tuple[str, str] | None:
    value = call.value(name)
    if value is None:
        return None
    resource_type, _, id = str(value).partition("/")
    if resource_type not in types or not id or "/" in id:
        raise BadRequest(
            f"Parameter '{name}' of $care-gaps must be {' or '.join(t + '/id' for t in types)}",
            expression=[name],
        )
    return resource_type, id


def _select_measures(
    call: OperationCall, measures: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    ids, urls = _strings(call, "measureId"), _strings(call, "measureUrl")
    identifiers = _strings(call, "measureIdentifier")
    if not (ids or urls or identifiers):
        return list(measures)
    chosen: dict[str, dict[str, Any]] = {}
    for name, wanted, key in (
        ("measureId", ids, lambda m: [m["id"]]),
        ("measureUrl", urls, lambda m: [m["url"], f"{m['url']}|{m.get('version')}"]),
        (
            "measureIdentifier",
            identifiers,
            lambda m: [
                v
                for i in m.get("identifier", [])
                for v in (i.get("value"), f"{i.get('system')}|{i.get('value')}")
            ],
        ),
    ):
        for value in wanted:
            matches = [m for m in measures if value in key(m)]
            if not matches:
                raise BadRequest(f"$care-gaps: no Measure with {name} '{value}'", expression=[name])
            chosen.update((m["id"], m) for m in matches)
    return [m for m in measures if m["id"] in chosen]


def _token_matches(value: str, codings: list[dict[str, Any]]) -> bool:
    """A token search value (`code` or `system|code`) names one of `codings`."""
    system, bar, code = value.rpartition("|")
    return any(c.get("code") == code and (not bar or c.get("system") == system) for c in codings)


def _by_topic(call: OperationCall, measures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    topics = _strings(call, "topic")
    if not topics:
        return measures
    for topic in topics:
        if not any(
            _token_matches(topic, [c for t in m.get("topic", []) for c in t.get("coding", [])])
            for m in measures
        ):
            raise BadRequest(f"$care-gaps: no Measure has topic '{topic}'", expression=["topic"])
    return [
        m
        for m in measures
        if any(
            _token_matches(topic, [c for t in m.get("topic", []) for c in t.get("coding", [])])
            for topic in topics
        )
    ]


def _by_program(
    call: OperationCall, measures: list[dict[str, Any]], config: CareGapConfig
) -> list[dict[str, Any]]:
    """The Measures whose rule belongs to one of the programs asked for (`tcm`, or
    `https://cmfhir.org/fhir/CodeSystem/program|tcm`)."""
    programs = _strings(call, "program")
    if not programs:
        return measures
    known = config.enrollment.programs
    wanted: set[str] = set()
    for program in programs:
        found = [
            key
            for key, coding in known.items()
            if _token_matches(program, [{"system": coding.system, "code": coding.code}])
        ]
        if not found:
            raise BadRequest(
                f"$care-gaps: program '{program}' is not one of {', '.join(sorted(known))}",
                expression=["program"],
            )
        wanted.update(found)
    rules = dict(config.rules.items())
    return [m for m in measures if m["id"] in rules and rules[m["id"]].program in wanted]


async def _search(
    ctx: FhirContext, repo: Repository, resource_type: str, params: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Every match of a search, page after page (in the caller's snapshot)."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = [*params, ("_count", str(ctx.limits.max_count))]
        if cursor is not None:
            query.append(("_cursor", cursor))
        request = parse_search(ctx.registry, resource_type, query, max_count=ctx.limits.max_count)
        page = await repo.search(request, count_up_to=0)
        found.extend(parse_json(content) for _, _, content in page.matches)
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def _members(
    ctx: FhirContext,
    repo: Repository,
    subject: tuple[str, str] | None,
    organization: tuple[str, str] | None,
) -> list[str] | None:
    """The member ids `subject` and `organization` select (None: not narrowed by them)."""
    members: set[str] | None = None
    if subject is not None:
        resource_type, id = subject
        if resource_type == "Patient":
            members = {id}
        else:
            group = await repo.read("Group", id)
            if group is None or group.deleted or group.content is None:
                raise BadRequest(f"$care-gaps: Group/{id} is not known", expression=["subject"])
            members = set()
            for member in parse_json(group.content).get("member", []):
                ref = (member.get("entity") or {}).get("reference", "")
                if ref.startswith("Patient/"):
                    members.add(ref.removeprefix("Patient/"))
    if organization is not None:
        episodes = await _search(
            ctx, repo, "EpisodeOfCare", [("organization", f"Organization/{organization[1]}")]
        )
        managed = {
            e["patient"]["reference"].removeprefix("Patient/")
            for e in episodes
            if str((e.get("patient") or {}).get("reference", "")).startswith("Patient/")
        }
        members = managed if members is None else members & managed
    return None if members is None else sorted(members)


def _in_period(issue: dict[str, Any], start: date, end: date) -> bool:
    identified = str(issue.get("identifiedDateTime", ""))[:10]
    if identified and identified > end.isoformat():
        return False
    if di.gap_status(issue) == "closed-gap":
        dates = [str(m.get("date", ""))[:10] for m in issue.get("mitigation", [])]
        closed = max((d for d in dates if d), default="")
        return not closed or closed >= start.isoformat()
    return True


def _cited(issue: dict[str, Any]) -> list[tuple[str, str]]:
    """The resources a DetectedIssue names: its evidence and its care manager."""
    found = []
    for target in [*references(issue.get("evidence") or []), di.care_manager_of(issue) or ""]:
        resource_type, _, id = target.partition("/")
        if resource_type and id and "/" not in id:
            found.append((resource_type, id))
    return found


async def care_gaps(
    ctx: FhirContext, call: OperationCall, profiles_dir: Path, base: str | None = None
) -> Result:
    start, end = _date(call, "periodStart"), _date(call, "periodEnd")
    if end < start:
        raise BadRequest("$care-gaps: periodEnd is before periodStart", expression=["periodEnd"])
    statuses = _strings(call, "status")
    if not statuses:
        raise BadRequest("$care-gaps needs at least one status", expression=["status"])
    for status in statuses:
        if status not in _STATUSES:
            raise BadRequest(
                f"$care-gaps: status '{status}' is not one of {', '.join(_STATUSES)}",
                expression=["status"],
            )
    subject = _reference(call, "subject", ("Patient", "Group"))
    practitioner = _reference(call, "practitioner", ("Practitioner",))
    organization = _reference(call, "organization", ("Organization",))
    if subject is None and practitioner is None and organization is None:
        raise BadRequest(
            "$care-gaps needs a subject, a practitioner or an organization",
            expression=["subject"],
        )
    config = load_config(profiles_dir / "care-gaps.json")
    order = [code for code, _ in config.rules.items()]
    measures = _select_measures(call, load_measures(profiles_dir))
    measures = _by_topic(call, measures)
    measures = _by_program(call, measures, config)
    # Sections in the rules' order (profiles/care-gaps.json), as the engine evaluates them.
    measures.sort(key=lambda m: order.index(m["id"]) if m["id"] in order else len(order))
    if not measures:
        return Result(200, {"resourceType": "Parameters"})
    params = [
        ("code", ",".join(f"{di.CARE_GAP_SYSTEM}|{m['id']}" for m in measures)),
        ("gap-status", ",".join(statuses)),
    ]
    if practitioner is not None:
        params.append(("care-manager", f"Practitioner/{practitioner[1]}"))
    async with ctx.store.snapshot(ctx.principal) as repo:
        members = await _members(ctx, repo, subject, organization)
        issues: list[dict[str, Any]] = []
        if members is None:
            issues = await _search(ctx, repo, "DetectedIssue", params)
        else:
            for n in range(0, len(members), _CHUNK):
                chunk = ",".join(f"Patient/{m}" for m in members[n : n + _CHUNK])
                issues += await _search(ctx, repo, "DetectedIssue", [*params, ("patient", chunk)])
        issues = [i for i in issues if _in_period(i, start, end)]
        by_member: dict[str, list[dict[str, Any]]] = {}
        for issue in issues:
            patient_ref = str((issue.get("patient") or {}).get("reference", ""))
            by_member.setdefault(patient_ref.removeprefix("Patient/"), []).append(issue)
        cited = {key for issue in issues for key in _cited(issue)}
        keys = sorted(cited | {("Patient", m) for m in by_member})
        contents = {k: parse_json(v) for k, v in (await repo.read_many(keys)).items()}
    now = instant(utcnow())
    parameters = []
    for member in sorted(by_member):
        patient = contents.get(("Patient", member))
        if patient is None:
            continue  # deleted, or not visible to the caller
        mine = sorted(by_member[member], key=lambda i: str(i.get("identifiedDateTime", "")))
        related = {
            f"{t}/{i}": contents[(t, i)]
            for issue in mine
            for t, i in _cited(issue)
            if (t, i) in contents and (t, i) != ("Patient", member)
        }
        report = GapsReport(patient, mine, related, measures, (start, end), now)
        parameters.append({"name": "return", "resource": document(report, base)})
    answer: dict[str, Any] = {"resourceType": "Parameters"}
    if parameters:
        answer["parameter"] = parameters
    return Result(200, answer)


def runner(profiles_dir: Path) -> Callable[..., Awaitable[Result]]:
    """The implementation app.py registers under `care-gaps`. routes/care_gaps.py binds
    the request's base URL (`base=`) so the entries' fullUrls are the resources' URLs;
    called without one (inside a batch) the entries get URNs."""

    async def run(ctx: FhirContext, call: OperationCall, *, base: str | None = None) -> Result:
        return await care_gaps(ctx, call, profiles_dir, base)

    return run
