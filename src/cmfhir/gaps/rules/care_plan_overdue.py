"""`care-plan-overdue`: an active CarePlan created or revised within the configured days
after the latest comprehensive assessment, and at least every configured interval (NC TCM
Provider Manual as recalled: 30 days, yearly; unverified).

A plan's date is its `created`, else its `period.start`: a revision is recorded as a new
CarePlan (with `replaces`) or a new `created`. `meta.lastUpdated` is not used, since loading
old plans would make every one look new."""

from __future__ import annotations

from datetime import date, datetime, timedelta

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
from cmfhir.gaps.rules._pending import (
    Pending,
    closed_until_due,
    gap_from,
    responses,
)

CODE = "care-plan-overdue"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset({"EpisodeOfCare", "QuestionnaireResponse", "CarePlan"})


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.care_plan_overdue
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    assessments = responses(
        snapshot, config, rule.assessment_questionnaires, rule.assessment_statuses, on
    )
    plans: list[tuple[date, str]] = []
    for plan in snapshot.of("CarePlan"):
        if plan.get("status") not in rule.statuses:
            continue
        if rule.categories and not has_coding(plan.get("category") or [], rule.categories):
            continue
        day = local_date(plan.get("created") or (plan.get("period") or {}).get("start"), zone)
        if day is not None and day <= on:
            plans.append((day, reference(plan)))
    plans.sort()

    pending: list[Pending] = []
    if assessments:
        assessed, assessment_ref = assessments[-1]
        if not any(day >= assessed for day, _ in plans):
            pending.append(
                Pending(
                    assessed + timedelta(days=rule.after_assessment.days),
                    assessed,
                    f"assessment on {short_date(assessed, on)}, no care plan since",
                    (assessment_ref,),
                )
            )
    if plans:
        revised, plan_ref = plans[-1]
        next_due = revised + timedelta(days=rule.every.days)
        if (next_due - on).days <= rule.notice.days:
            pending.append(
                Pending(
                    next_due,
                    revised,
                    f"care plan last revised on {short_date(revised, on)}",
                    (plan_ref,),
                )
            )
    if pending:
        return [gap_from(CODE, "Care plan", pending, on, config)]
    if not plans:
        return []
    revised, plan_ref = plans[-1]
    return [
        closed_until_due(CODE, "Care plan revised", revised, plan_ref, rule.every.days, on, config)
    ]
