"""`bh-follow-up`: a visit with a mental-health provider within the configured days after an
inpatient discharge whose principal diagnosis is a mental illness (the HEDIS FUH shape: a
visit on the discharge day does not count)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from cmfhir.gaps.config import CareGapConfig, matches_any
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    Resource,
    active_enrollment,
    codings,
    concept_text,
    encounter_class_in,
    facility,
    local_date,
    moment,
    reference,
    short_date,
    specialties,
    today,
    window_status,
)

CODE = "bh-follow-up"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {"EpisodeOfCare", "Encounter", "Condition", "PractitionerRole", "Organization", "Location"}
)


def _principal_diagnosis(
    snapshot: MemberSnapshot, encounter: Resource
) -> tuple[list[Mapping[str, Any]], str | None]:
    """The codings of the principal diagnosis (rank 1, else the first listed; the
    reasonCode when there is none) and the Condition it references."""
    diagnoses = [d for d in encounter.get("diagnosis") or () if isinstance(d, Mapping)]
    if diagnoses:
        ranked = [d for d in diagnoses if isinstance(d.get("rank"), int)]
        principal = min(ranked, key=lambda d: int(d["rank"])) if ranked else diagnoses[0]
        ref = (principal.get("condition") or {}).get("reference")
        condition = snapshot.get(ref) if isinstance(ref, str) else None
        if condition is None:
            return [], None
        return codings(condition.get("code")), ref
    return codings(encounter.get("reasonCode") or []), None


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.bh_follow_up
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    mental_health = rule.mental_health_specialties.codes
    visits: list[tuple[date, Resource, str]] = []
    for encounter in snapshot.of("Encounter"):
        if encounter.get("status") not in rule.visit_statuses:
            continue
        if not encounter_class_in(encounter, rule.visit_classes):
            continue
        provider = next(
            (
                spec.display or spec.code
                for coding in specialties(snapshot, encounter)
                for spec in mental_health
                if spec.matches(coding)
            ),
            None,
        )
        if provider is None:
            continue
        period = encounter.get("period") or {}
        day = local_date(period.get("start") or period.get("end"), zone)
        if day is not None and day <= on:
            visits.append((day, encounter, provider))
    visits.sort(key=lambda v: (v[0], reference(v[1])))

    gaps: list[Gap] = []
    for encounter in snapshot.of("Encounter"):
        if encounter.get("status") not in rule.encounter_statuses:
            continue
        if not encounter_class_in(encounter, rule.encounter_classes):
            continue
        ended = moment((encounter.get("period") or {}).get("end"), zone)
        if ended is None or ended > as_of:
            continue
        diagnosis, condition = _principal_diagnosis(snapshot, encounter)
        if not any(matches_any(rule.mental_illness_diagnoses.codes, c) for c in diagnosis):
            continue
        day = ended.astimezone(zone).date()
        if (on - day).days > rule.lookback.days:
            continue
        due = day + timedelta(days=rule.visit.days)
        key = reference(encounter)
        evidence = (key, condition) if condition else (key,)
        place = facility(snapshot, encounter)
        where = f" from {place}" if place else ""
        # HEDIS FUH: the follow-up is after the discharge day and within the window.
        visit = next((v for v in visits if day < v[0] <= due), None)
        if visit is not None:
            seen, found, provider = visit
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=f"Discharged{where} on {short_date(day, on)} "
                    f"({concept_text({'coding': diagnosis}, 'mental illness')}); "
                    f"seen on {short_date(seen, on)}",
                    evidence=(*evidence, reference(found)),
                    identified=ended,
                    due=due,
                    mitigation=f"Follow-up visit ({provider}) on {short_date(seen, on)}",
                )
            )
            continue
        gaps.append(
            Gap(
                rule=CODE,
                key=key,
                status=window_status(due, on),
                detail=f"Discharged{where} on {short_date(day, on)} "
                f"({concept_text({'coding': diagnosis}, 'mental illness')}); no mental-health "
                f"follow-up visit yet — due {short_date(due, on)}",
                evidence=evidence,
                identified=ended,
                due=due,
            )
        )
    return gaps
