"""The care-gap rules, one module per code of https://cmfhir.org/fhir/CodeSystem/care-gap.

Each module has `CODE` and a pure `evaluate(snapshot, as_of, config) -> list[Gap]`: no
database, no clock (`as_of` is passed in), every threshold from `profiles/care-gaps.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import ModuleType

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules import (
    assessment_overdue,
    bh_follow_up,
    care_plan_overdue,
    contact_requirement,
    medication_adherence,
    missed_appointment,
    new_medication,
    new_specialist,
    no_care_manager,
    sdoh_referral,
    transition_follow_up,
)

__all__ = ["RULES", "evaluate_all"]

RULES: Sequence[ModuleType] = (
    transition_follow_up,
    bh_follow_up,
    new_specialist,
    new_medication,
    missed_appointment,
    assessment_overdue,
    care_plan_overdue,
    medication_adherence,
    contact_requirement,
    no_care_manager,
    sdoh_referral,
)


def evaluate_all(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    """Every rule's gaps for one member, in rule order."""
    gaps: list[Gap] = []
    for rule in RULES:
        gaps.extend(rule.evaluate(snapshot, as_of, config))
    return gaps
