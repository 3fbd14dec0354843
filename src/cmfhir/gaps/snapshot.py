"""Building members' snapshots (gaps/model.py MemberSnapshot) from the store: each member's
Patient compartment, and the practitioners, roles, organizations and locations those
resources refer to (two levels: an Encounter's PractitionerRole, then its Practitioner and
Organization). The engine reads them inside one REPEATABLE READ transaction, so every
member is seen in one committed state."""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cmfhir.gaps.model import MemberSnapshot
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import Repository, gap_queue

__all__ = ["care_manager", "read_snapshots"]

SHARED_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Location"})
CARE_TEAM_ROLES = "https://cmfhir.org/fhir/CodeSystem/care-team-role"


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield reference
        for key, child in value.items():
            if key != "contained" and isinstance(child, dict | list):
                yield from _references(child)
    elif isinstance(value, list):
        for child in value:
            yield from _references(child)


def _shared(resources: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for resource in resources:
        for reference in _references(resource):
            resource_type, _, id = reference.partition("/")
            if resource_type in SHARED_TYPES and id and "/" not in id:
                found.add((resource_type, id))
    return found


async def read_snapshots(repo: Repository, patient_ids: Sequence[str]) -> dict[str, MemberSnapshot]:
    """The snapshot of each member (one with no resources for a member with none)."""
    own: dict[str, list[dict[str, Any]]] = {p: [] for p in patient_ids}
    for patient_id, _, content in await gap_queue.compartments(repo, patient_ids):
        own[patient_id].append(parse_json(content))
    shared: dict[tuple[str, str], dict[str, Any]] = {}
    wanted = set().union(*(_shared(r) for r in own.values())) if own else set()
    for _ in range(2):
        missing = sorted(wanted - shared.keys())
        if not missing:
            break
        found = {key: parse_json(text) for key, text in (await repo.read_many(missing)).items()}
        shared.update(found)
        wanted |= _shared(list(found.values()))
    snapshots = {}
    for patient_id, resources in own.items():
        mine = _shared(resources)
        for _ in range(2):
            mine |= _shared([shared[k] for k in mine if k in shared])
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in [*resources, *(shared[k] for k in sorted(mine) if k in shared)]:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        snapshots[patient_id] = MemberSnapshot(patient_id, by_type)
    return snapshots


def _moment(value: Any, *, end: bool) -> datetime | None:
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) <= 10:
            parts = [int(p) for p in value.split("-")]
            year, month = [*parts, 12 if end else 1][:2]
            last = calendar.monthrange(year, month)[1]
            day = parts[2] if len(parts) == 3 else (last if end else 1)
            return datetime(year, month, day, 23 if end else 0, 59 if end else 0, tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _current(period: Any, as_of: datetime) -> bool:
    period = period if isinstance(period, dict) else {}
    start = _moment(period.get("start"), end=False)
    end = _moment(period.get("end"), end=True)
    return (start is None or start <= as_of) and (end is None or as_of <= end)


def care_manager(snapshot: MemberSnapshot, as_of: datetime) -> str | None:
    """The member's care manager at `as_of`: the `careManager` of their active enrollment
    (EpisodeOfCare; the latest started if several), else a participant with the role
    care-manager on an active CareTeam. A relative reference (`Practitioner/7`), or None."""
    episodes = [
        e
        for e in snapshot.of("EpisodeOfCare")
        if e.get("status") == "active"
        and _current(e.get("period"), as_of)
        and isinstance((e.get("careManager") or {}).get("reference"), str)
    ]
    if episodes:
        latest = max(episodes, key=lambda e: str((e.get("period") or {}).get("start") or ""))
        reference: str = latest["careManager"]["reference"]
        return reference
    for team in snapshot.of("CareTeam"):
        if team.get("status") != "active":
            continue
        for participant in team.get("participant") or ():
            roles = [c for r in participant.get("role") or () for c in r.get("coding") or ()]
            if any(c.get("code") == "care-manager" for c in roles) and _current(
                participant.get("period"), as_of
            ):
                member = (participant.get("member") or {}).get("reference")
                if isinstance(member, str):
                    return member
    return None
