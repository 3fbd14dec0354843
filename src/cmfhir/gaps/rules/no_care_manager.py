"""`no-care-manager`: an active enrollment with no care manager, neither on the
EpisodeOfCare (`careManager`) nor as a current participant of an active CareTeam in the
configured care-manager role (NC TCM: a single designated care manager per member)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
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
    for team in snapshot.of("CareTeam"):
        if team.get("status") not in rule.care_team_statuses:
            continue
        for participant in team.get("participant") or ():
            if not has_coding(participant.get("role") or [], rule.care_manager_roles):
                continue
            member = participant.get("member") or {}
            if not isinstance(member.get("reference"), str):
                continue
            period = participant.get("period") or {}
            begins = local_date(period.get("start"), zone)
            ends = local_date(period.get("end"), zone)
            if (begins and begins > on) or (ends and ends < on):
                continue
            name = _name(snapshot, member)
            return [
                Gap(
                    rule=CODE,
                    key="",
                    status="closed-gap",
                    detail=f"Care manager: {name}",
                    evidence=(enrollment.reference, reference(team)),
                    identified=identified,
                    mitigation=f"{name} is the care manager on the care team",
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
