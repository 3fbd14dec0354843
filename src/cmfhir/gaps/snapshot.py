"""Building members' snapshots (gaps/model.py MemberSnapshot) from the store: each member's
Patient compartment, and the practitioners, roles, organizations and locations those
resources refer to (two levels: an Encounter's PractitionerRole, then its Practitioner and
Organization). The engine reads them inside one REPEATABLE READ transaction, so every
member is seen in one committed state."""

from __future__ import annotations

import calendar
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from cmfhir.gaps.model import MemberSnapshot
from cmfhir.gaps.ruleset import SHARED_TYPES
from cmfhir.store import Repository, gap_queue

__all__ = ["MemberTexts", "care_manager", "read_members", "read_snapshots"]

CARE_TEAM_ROLES = "https://cmfhir.org/fhir/CodeSystem/care-team-role"


# References to shared resources, found in the stored JSON text without parsing it (the
# store's JSONB text puts one space after the colon; ids are FHIR ids).
_SHARED_REFERENCE = re.compile(
    r'"reference":\s*"(Practitioner|PractitionerRole|Organization|Location|Medication)/'
    r'([A-Za-z0-9.\-]{1,64})"'
)


def _shared(content: str, types: Collection[str]) -> set[tuple[str, str]]:
    return {
        (m.group(1), m.group(2)) for m in _SHARED_REFERENCE.finditer(content) if m.group(1) in types
    }


@dataclass(slots=True)
class MemberTexts:
    """Members' resources as read (one JSON array text per member) and the shared resources
    they cite, parsed: each member's snapshot is made (parsed) only when asked for
    (`snapshot`), so that a batch holds one member's parsed resources at a time."""

    texts: dict[str, str]
    cites: dict[str, set[tuple[str, str]]]
    shared: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    further: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)

    def snapshot(self, patient_id: str) -> MemberSnapshot:
        """The member's snapshot (one with no resources for a member with none)."""
        text = self.texts.get(patient_id)
        resources: list[dict[str, Any]] = orjson.loads(text) if text is not None else []
        mine = set(self.cites.get(patient_id, ()))
        for _ in range(2):
            mine |= set().union(*(self.further.get(k, set()) for k in mine))
        by_type: dict[str, list[dict[str, Any]]] = {}
        for resource in resources:
            by_type.setdefault(resource["resourceType"], []).append(resource)
        for key in sorted(mine):
            found = self.shared.get(key)
            if found is not None:
                by_type.setdefault(found["resourceType"], []).append(found)
        return MemberSnapshot(patient_id, by_type)


async def read_members(
    repo: Repository,
    patient_ids: Sequence[str],
    types: Collection[str] | None = None,
    shared_types: Collection[str] = SHARED_TYPES,
) -> MemberTexts:
    """What the members' snapshots are made of: of their compartments only the resources
    of `types` (all when None), and the shared resources of `shared_types` they refer to.
    One query for every member's compartment, then at most two for the shared resources.

    Resources are parsed with orjson: rules see decimals as floats."""
    follow = frozenset(shared_types)
    read = MemberTexts({}, {})
    for patient_id, content in await gap_queue.compartments(repo, patient_ids, types):
        read.texts[patient_id] = content
        if follow:
            read.cites[patient_id] = _shared(content, follow)
    wanted = set().union(*read.cites.values()) if read.cites else set()
    for _ in range(2):
        missing = sorted(wanted - read.shared.keys())
        if not missing:
            break
        for key, content in (await repo.read_many(missing)).items():
            read.shared[key] = orjson.loads(content)
            read.further[key] = _shared(content, follow)
        wanted |= set().union(*(read.further[k] for k in missing if k in read.further))
    return read


async def read_snapshots(
    repo: Repository,
    patient_ids: Sequence[str],
    types: Collection[str] | None = None,
    shared_types: Collection[str] = SHARED_TYPES,
) -> dict[str, MemberSnapshot]:
    """The snapshot of each member, all parsed at once (`read_members`)."""
    read = await read_members(repo, patient_ids, types, shared_types)
    return {patient_id: read.snapshot(patient_id) for patient_id in patient_ids}


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
