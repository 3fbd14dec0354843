"""`new-specialist`: a finished ambulatory visit with a specialty outside primary care that
the member has not seen in the configured prior days (NC data-system guidance: "new visits
with specialists"). It stays open until a care manager acknowledges it (a mitigation on the
gap's DetectedIssue)."""

from __future__ import annotations

from datetime import date, datetime

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    Resource,
    acknowledgement,
    active_enrollment,
    encounter_class_in,
    facility,
    local_date,
    reference,
    short_date,
    specialties,
    today,
)

CODE = "new-specialist"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {"EpisodeOfCare", "Encounter", "PractitionerRole", "Organization", "Location", "DetectedIssue"}
)


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.new_specialist
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    primary = rule.primary_care_specialties.codes
    visits: list[tuple[date, str, Resource, dict[str, str]]] = []
    for encounter in snapshot.of("Encounter"):
        if encounter.get("status") not in rule.encounter_statuses:
            continue
        if not encounter_class_in(encounter, rule.encounter_classes):
            continue
        period = encounter.get("period") or {}
        day = local_date(period.get("start") or period.get("end"), zone)
        if day is None or day > on:
            continue
        found: dict[str, str] = {}
        for coding in specialties(snapshot, encounter, rule.specialty_system):
            code = coding.get("code")
            if isinstance(code, str) and not any(spec.matches(coding) for spec in primary):
                display = coding.get("display")
                found.setdefault(code, display if isinstance(display, str) else code)
        visits.append((day, reference(encounter), encounter, found))
    visits.sort(key=lambda v: (v[0], v[1]))

    gaps: list[Gap] = []
    for index, (day, key, encounter, found) in enumerate(visits):
        if not found or (on - day).days > rule.lookback.days:
            continue
        seen_before = {
            code
            for prior_day, _, _, prior in visits[:index]
            if (day - prior_day).days <= rule.prior_visits.days
            for code in prior
        }
        new = {code: display for code, display in found.items() if code not in seen_before}
        if not new:
            continue
        names = ", ".join(sorted(new.values()))
        place = facility(snapshot, encounter)
        at = f" at {place}" if place else ""
        detail = (
            f"New specialist: {names}{at} on {short_date(day, on)} "
            f"(not seen in the prior {rule.prior_visits.days} days)"
        )
        acknowledged = acknowledgement(snapshot, config, CODE, key)
        if acknowledged is not None:
            _, action, when = acknowledged
            said = f" on {short_date(when, on)}" if when else ""
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=detail,
                    evidence=(key,),
                    identified=datetime.combine(day, datetime.min.time(), zone),
                    mitigation=f"Acknowledged{said}: {action}",
                )
            )
            continue
        gaps.append(
            Gap(
                rule=CODE,
                key=key,
                status="open-gap",
                detail=detail,
                evidence=(key,),
                identified=datetime.combine(day, datetime.min.time(), zone),
            )
        )
    return gaps
