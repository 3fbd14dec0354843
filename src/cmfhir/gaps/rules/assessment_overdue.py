"""`assessment-overdue`: the comprehensive assessment (a completed response to
Questionnaire/comprehensive-assessment) is due within the configured days of enrollment, at
least every configured interval, and after an inpatient or ED discharge (NC TCM Provider
Manual as recalled: 60 days, yearly; unverified)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    active_enrollment,
    encounter_class_in,
    facility,
    moment,
    reference,
    short_date,
    today,
)
from cmfhir.gaps.rules._pending import (
    Pending,
    closed_until_due,
    gap_from,
    responses,
)

CODE = "assessment-overdue"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {"EpisodeOfCare", "QuestionnaireResponse", "Encounter", "Organization", "Location"}
)


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.assessment_overdue
    zone = config.zone
    enrollment = active_enrollment(snapshot, as_of, config, rule.program)
    if rule.enrolled_only and enrollment is None:
        return []
    on = today(as_of, zone)
    done = responses(snapshot, config, rule.questionnaires, rule.response_statuses, on)
    start = enrollment.start if enrollment else None
    pending: list[Pending] = []
    if enrollment is not None and start is not None and not any(d >= start for d, _ in done):
        pending.append(
            Pending(
                start + timedelta(days=rule.after_enrollment.days),
                start,
                f"enrolled on {short_date(start, on)}, no assessment since",
                (enrollment.reference,),
            )
        )
    for encounter in snapshot.of("Encounter"):
        if encounter.get("status") not in rule.encounter_statuses:
            continue
        if not encounter_class_in(encounter, rule.discharge_classes):
            continue
        ended = moment((encounter.get("period") or {}).get("end"), zone)
        if ended is None or ended > as_of:
            continue
        day = ended.astimezone(zone).date()
        if (start is not None and day < start) or any(d >= day for d, _ in done):
            continue
        place = facility(snapshot, encounter)
        where = f" from {place}" if place else ""
        pending.append(
            Pending(
                day + timedelta(days=rule.after_discharge.days),
                day,
                f"discharged{where} on {short_date(day, on)}, no reassessment since",
                (reference(encounter),),
            )
        )
    if done:
        last, last_ref = done[-1]
        next_due = last + timedelta(days=rule.every.days)
        if (next_due - on).days <= rule.notice.days:
            pending.append(
                Pending(next_due, last, f"last assessment on {short_date(last, on)}", (last_ref,))
            )
    if pending:
        return [gap_from(CODE, "Comprehensive assessment", pending, on, config)]
    if not done:
        return []
    last, last_ref = done[-1]
    return [
        closed_until_due(
            CODE, "Comprehensive assessment completed", last, last_ref, rule.every.days, on, config
        )
    ]
