"""Shared shape of the "overdue document" rules (assessment, care plan): several
requirements, each with a due date; the earliest unmet one decides the gap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    canonical_in,
    local_date,
    reference,
    short_date,
    window_status,
)


@dataclass(frozen=True, slots=True, order=True)
class Pending:
    """An unmet requirement: due by `due` because of `reason`."""

    due: date
    since: date
    reason: str
    evidence: tuple[str, ...]


def responses(
    snapshot: MemberSnapshot,
    config: CareGapConfig,
    questionnaires: tuple[str, ...],
    statuses: tuple[str, ...],
    on: date,
) -> list[tuple[date, str]]:
    """(authored day, reference) of the member's completed responses to `questionnaires`,
    oldest first."""
    found: list[tuple[date, str]] = []
    for response in snapshot.of("QuestionnaireResponse"):
        if response.get("status") not in statuses:
            continue
        if not canonical_in(response.get("questionnaire"), questionnaires):
            continue
        day = local_date(response.get("authored"), config.zone)
        if day is not None and day <= on:
            found.append((day, reference(response)))
    return sorted(found)


def midnight(day: date, config: CareGapConfig) -> datetime:
    return datetime.combine(day, datetime.min.time(), config.zone)


def gap_from(
    code: str,
    what: str,
    pending: list[Pending],
    on: date,
    config: CareGapConfig,
) -> Gap:
    """The open or prospective gap of the earliest unmet requirement."""
    first = min(pending)
    evidence = tuple(dict.fromkeys(e for p in sorted(pending) for e in p.evidence))
    status = window_status(first.due, on)
    when = "overdue since" if status == "open-gap" else "due"
    return Gap(
        rule=code,
        key="",
        status=status,
        detail=f"{what} {when} {short_date(first.due, on)}: {first.reason}",
        evidence=evidence,
        identified=midnight(first.since, config),
        due=first.due,
    )


def closed_until_due(
    code: str,
    done: str,
    last: date,
    evidence: str,
    every_days: int,
    on: date,
    config: CareGapConfig,
) -> Gap:
    """The closed gap of a document done on `last` (`done`: "Care plan revised") and next due
    `every_days` later."""
    next_due = last + timedelta(days=every_days)
    return Gap(
        rule=code,
        key="",
        status="closed-gap",
        detail=f"{done} on {short_date(last, on)}; next due {short_date(next_due, on)}",
        evidence=(evidence,),
        identified=midnight(last, config),
        due=next_due,
        mitigation=f"{done} on {short_date(last, on)}",
    )
