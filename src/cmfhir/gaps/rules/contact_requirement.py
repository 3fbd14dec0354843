"""`contact-requirement`: at least the configured number of qualifying contacts in each
calendar period for the member's acuity tier (the tier extension on the active TCM
EpisodeOfCare; with no tier, the requirements for any tier such as the billing floor).
Prospective while the period runs, open once it has ended unmet, closed when met.

Each configured requirement names its metric (qualifying-contacts or in-person-contacts)
and calendar period; several that apply to one metric and period keep the strictest. The
monthly contact count is keyed by its month (`2026-10`); other counts by period and metric
(`2026-Q4/in-person-contacts`). A period that began before the enrollment is measured only
when the configuration says partial periods count."""

from __future__ import annotations

from datetime import datetime, timedelta

from cmfhir.gaps.config import ANY_TIER, CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    active_enrollment,
    next_period,
    period_label,
    period_of,
    qualifying_contacts,
    short_date,
    today,
)

CODE = "contact-requirement"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset({"EpisodeOfCare", "Communication"})
_MONTHLY = ("qualifying-contacts", "month")
_WORDS = {"qualifying-contacts": "qualifying contacts", "in-person-contacts": "in-person contacts"}


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.contact_requirement
    zone = config.zone
    enrollment = active_enrollment(snapshot, as_of, config, rule.program)
    if enrollment is None:
        return []
    on = today(as_of, zone)
    tier = enrollment.tier
    thresholds: dict[tuple[str, str], int] = {}
    for requirement in rule.requirements:
        if requirement.acuity_tier not in (ANY_TIER, tier):
            continue
        calendar = getattr(requirement.window, "calendar", "month")
        kind = (requirement.metric, calendar)
        thresholds[kind] = max(thresholds.get(kind, 0), requirement.threshold)
    contacts = [c for c in qualifying_contacts(snapshot, config) if c.sent <= as_of]
    who = f"{tier} acuity" if tier else "no acuity tier recorded"

    gaps: list[Gap] = []
    for (metric, calendar), threshold in sorted(thresholds.items()):
        first = enrollment.start or period_of(on, calendar)[0]
        start, _ = period_of(first, calendar)
        if start < first and not rule.measure_partial_first_period:
            start = next_period(start, calendar)
        # Periods that ended more than the lookback ago are not looked at: start at the one
        # holding the lookback's first day (not at the enrollment's, years back).
        start = max(start, period_of(on - timedelta(days=rule.lookback.days), calendar)[0])
        while start <= on:
            period_start, period_end = period_of(start, calendar)
            start = next_period(period_start, calendar)
            if (on - period_end).days > rule.lookback.days:
                continue
            counted = [
                c
                for c in contacts
                if period_start <= c.day <= period_end
                and (metric != "in-person-contacts" or c.in_person)
            ]
            label, words = period_label(period_start, calendar)
            key = label if (metric, calendar) == _MONTHLY else f"{label}/{metric}"
            what = _WORDS.get(metric, metric)
            detail = f"{len(counted)} of {threshold} {what} in {words} ({who})"
            evidence = (enrollment.reference, *(c.reference for c in counted))
            identified = datetime.combine(period_start, datetime.min.time(), zone)
            if len(counted) >= threshold:
                last = counted[-1].day if counted else period_start
                gaps.append(
                    Gap(
                        rule=CODE,
                        key=key,
                        status="closed-gap",
                        detail=detail,
                        evidence=evidence,
                        identified=identified,
                        due=period_end,
                        mitigation=f"Requirement met: {len(counted)} {what} in {words}, "
                        f"the last on {short_date(last, on)}",
                    )
                )
                continue
            running = period_end >= on
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="prospective-gap" if running else "open-gap",
                    detail=f"{detail} — due by {short_date(period_end, on)}"
                    if running
                    else f"{detail}; the period ended {short_date(period_end, on)}",
                    evidence=evidence,
                    identified=identified,
                    due=period_end,
                )
            )
    return gaps
