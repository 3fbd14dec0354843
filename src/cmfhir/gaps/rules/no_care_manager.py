"""`no-care-manager`: an active enrollment with no care manager, neither on the
EpisodeOfCare (`careManager`) nor as a current participant of an active CareTeam in the
configured care-manager role (NC TCM: a single designated care manager per member).

Prospective when the only care managers are CareTeam participants whose assignment (the
participant's or the team's period) ends within the configured notice: the member will
have none from the day after unless someone is assigned. `EpisodeOfCare.careManager` has no
end date of its own, so it closes the gap for as long as the enrollment lasts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    active_enrollment,
    has_coding,
    local_date,
    reference,
    short_date,
    today,
)

CODE = "no-care-manager"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {
        "EpisodeOfCare",
        "CareTeam",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
        "Organization",
        "Patient",
    }
)


@dataclass(frozen=True, slots=True)
class _Assignment:
    """A care manager on an active CareTeam, from `begins` to `ends` (either open)."""

    begins: date | None
    ends: date | None
    name: str
    team: str


def _name(snapshot: MemberSnapshot, ref: Mapping[str, Any]) -> str:
    if isinstance(ref.get("display"), str):
        return str(ref["display"])
    target = ref.get("reference")
    found = snapshot.get(target) if isinstance(target, str) else None
    for name in (found or {}).get("name") or ():
        if isinstance(name, Mapping) and isinstance(name.get("text"), str):
            return str(name["text"])
        if isinstance(name, Mapping):
            parts = [*(name.get("given") or ()), name.get("family") or ""]
            text = " ".join(p for p in parts if isinstance(p, str) and p)
            if text:
                return text
    return str(target or "a care manager")


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.no_care_manager
    zone = config.zone
    enrollment = active_enrollment(snapshot, as_of, config, rule.program)
    if enrollment is None:
        return []
    on = today(as_of, zone)
    since = enrollment.start or on
    identified = datetime.combine(since, datetime.min.time(), zone)
    manager = enrollment.episode.get("careManager") or {}
    if enrollment.care_manager:
        return [
            Gap(
                rule=CODE,
                key="",
                status="closed-gap",
                detail=f"Care manager: {_name(snapshot, manager)}",
                evidence=(enrollment.reference, enrollment.care_manager),
                identified=identified,
                mitigation=f"{_name(snapshot, manager)} is the care manager on the enrollment",
            )
        ]
    assignments: list[_Assignment] = []  # those not over by today
    for team in snapshot.of("CareTeam"):
        if team.get("status") not in rule.care_team_statuses:
            continue
        team_ends = local_date((team.get("period") or {}).get("end"), zone)
        for participant in team.get("participant") or ():
            if not has_coding(participant.get("role") or [], rule.care_manager_roles):
                continue
            member = participant.get("member") or {}
            if not isinstance(member.get("reference"), str):
                continue
            period = participant.get("period") or {}
            begins = local_date(period.get("start"), zone)
            ends = min(
                (d for d in (local_date(period.get("end"), zone), team_ends) if d is not None),
                default=None,
            )
            if ends is None or ends >= on:
                assignments.append(
                    _Assignment(begins, ends, _name(snapshot, member), reference(team))
                )
    current = [a for a in assignments if a.begins is None or a.begins <= on]
    if current:

        def lasting(ends: date | None) -> bool:
            return ends is None or (ends - on).days > rule.notice.days

        last = max((a.ends for a in current if a.ends is not None), default=None)
        staying = [a for a in current if lasting(a.ends)]
        successors = [
            a
            for a in assignments
            if a.begins is not None
            and a.begins > on
            and last is not None
            and a.begins <= last + timedelta(days=1)
            and lasting(a.ends)
        ]
        if staying or successors:
            chosen = (staying or successors)[0]
            name, team_ref = chosen.name, chosen.team
            how = (
                "is the care manager on the care team"
                if staying
                else f"takes over as care manager on {short_date(chosen.begins or on, on)}"
            )
            return [
                Gap(
                    rule=CODE,
                    key="",
                    status="closed-gap",
                    detail=f"Care manager: {name}",
                    evidence=(enrollment.reference, team_ref),
                    identified=identified,
                    mitigation=f"{name} {how}",
                )
            ]
        if last is not None:
            due = last + timedelta(days=1)
            name = next(a.name for a in current if a.ends == last)
            return [
                Gap(
                    rule=CODE,
                    key="",
                    status="prospective-gap",
                    detail=f"{name}'s assignment as care manager ends on "
                    f"{short_date(last, on)} and no one follows — assign one by "
                    f"{short_date(due, on)}",
                    evidence=(enrollment.reference, *dict.fromkeys(a.team for a in current)),
                    identified=identified,
                    due=due,
                )
            ]
    return [
        Gap(
            rule=CODE,
            key="",
            status="open-gap",
            detail=f"Enrolled since {short_date(since, on)} with no care manager assigned",
            evidence=(enrollment.reference,),
            identified=identified,
        )
    ]
