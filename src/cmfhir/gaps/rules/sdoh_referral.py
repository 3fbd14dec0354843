"""`sdoh-referral`: a positive SDOH screen item (a configured item of a completed
comprehensive assessment answered Yes) or an active SDOH Condition (as $extract writes them)
with no ServiceRequest or Task referral for that need within the configured days. A member
who answered that they do not want help closes it too: the screen is person-driven.

One gap per need (`food-insecurity`, `housing-instability` ...), about its latest positive
finding: a referral dated on or after that finding closes it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cmfhir.gaps.config import CareGapConfig, SdohReferral, matches_any
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    Resource,
    active_enrollment,
    canonical_in,
    codings,
    local_date,
    reference,
    short_date,
    today,
    window_status,
)

CODE = "sdoh-referral"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset({"EpisodeOfCare", "QuestionnaireResponse", "Condition", "ServiceRequest", "Task"})


@dataclass(frozen=True, slots=True)
class Finding:
    day: date
    reference: str
    help_declined: bool


def _items(items: Any) -> Iterator[Mapping[str, Any]]:
    for item in items or ():
        if not isinstance(item, dict):
            continue
        yield item
        yield from _items(item.get("item"))
        for answer in item.get("answer") or ():
            if isinstance(answer, dict):
                yield from _items(answer.get("item"))


def _answered(item: Mapping[str, Any], boolean: bool, codes: Any) -> bool:
    for answer in item.get("answer") or ():
        if not isinstance(answer, dict):
            continue
        if answer.get("valueBoolean") is boolean:
            return True
        coding = answer.get("valueCoding")
        if isinstance(coding, dict) and matches_any(codes, coding):
            return True
    return False


def _screen_findings(
    snapshot: MemberSnapshot, rule: SdohReferral, zone: Any, on: date
) -> dict[str, list[Finding]]:
    findings: dict[str, list[Finding]] = {}
    for response in snapshot.of("QuestionnaireResponse"):
        if response.get("status") not in rule.response_statuses:
            continue
        if not canonical_in(response.get("questionnaire"), rule.questionnaires):
            continue
        day = local_date(response.get("authored"), zone)
        if day is None or day > on:
            continue
        items = list(_items(response.get("item")))
        declined = any(
            item.get("linkId") in rule.help_link_ids
            and _answered(item, False, rule.declined_answers)
            for item in items
        )
        for need, domain in rule.needs.domains.items():
            if any(
                item.get("linkId") in domain.link_ids
                and _answered(item, True, rule.positive_answers)
                for item in items
            ):
                findings.setdefault(need, []).append(Finding(day, reference(response), declined))
    for condition in snapshot.of("Condition"):
        status = codings(condition.get("clinicalStatus"))
        if status and not any(c.get("code") in rule.condition_statuses for c in status):
            continue
        verification = codings(condition.get("verificationStatus"))
        if any(c.get("code") in rule.ignored_condition_verifications for c in verification):
            continue
        onset = condition.get("onsetPeriod") or {}
        day = local_date(
            condition.get("recordedDate") or condition.get("onsetDateTime") or onset.get("start"),
            zone,
        )
        if day is None or day > on:
            continue
        found = codings(condition.get("code")) + codings(condition.get("category") or [])
        for need, domain in rule.needs.domains.items():
            if any(matches_any(domain.codes, c) for c in found):
                findings.setdefault(need, []).append(Finding(day, reference(condition), False))
    return findings


def _referrals(
    snapshot: MemberSnapshot,
    rule: SdohReferral,
    zone: Any,
    on: date,
    findings: dict[str, list[Finding]],
) -> dict[str, list[tuple[date, str]]]:
    """(day, reference) of the referrals for each need (`findings`: `_screen_findings`)."""

    def needs_of(resource: Resource, linked: dict[str, set[str]]) -> set[str]:
        found = codings(resource.get("code"))
        for element in ("category", "reasonCode"):
            found += codings(resource.get(element) or [])
        out = {
            need
            for need, domain in rule.needs.domains.items()
            if any(matches_any(domain.codes, c) for c in found)
        }
        reasons = resource.get("reasonReference") or ()
        # ServiceRequest.reasonReference is a list, Task.reasonReference one Reference.
        reasons = [reasons] if isinstance(reasons, Mapping) else reasons
        refs = [r.get("reference") for r in reasons if isinstance(r, Mapping)]
        refs.append((resource.get("focus") or {}).get("reference"))
        for need, targets in linked.items():
            if any(ref in targets for ref in refs):
                out.add(need)
        return out

    linked: dict[str, set[str]] = {}
    for need, found in findings.items():
        linked[need] = {f.reference for f in found}
    out: dict[str, list[tuple[date, str]]] = {}
    for kind in ("ServiceRequest", "Task"):
        for resource in snapshot.of(kind):
            if resource.get("status") in rule.ignored_referral_statuses:
                continue
            day = local_date(
                resource.get("authoredOn")
                or resource.get("occurrenceDateTime")
                or (resource.get("executionPeriod") or {}).get("start"),
                zone,
            )
            if day is None or day > on:
                continue
            for need in needs_of(resource, linked):
                out.setdefault(need, []).append((day, reference(resource)))
            if kind == "ServiceRequest":
                # A Task whose focus is this ServiceRequest is a referral for the same needs.
                for need in needs_of(resource, linked):
                    linked.setdefault(need, set()).add(reference(resource))
    return out


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.sdoh_referral
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    findings = _screen_findings(snapshot, rule, zone, on)
    if not findings:
        return []  # no positive screen: no gap, whatever the referrals
    referrals = _referrals(snapshot, rule, zone, on, findings)
    gaps: list[Gap] = []
    for need in sorted(findings):
        latest = max(f.day for f in findings[need])
        if (on - latest).days > rule.lookback.days:
            continue
        current = sorted((f for f in findings[need] if f.day == latest), key=lambda f: f.reference)
        evidence = tuple(f.reference for f in current)
        words = rule.needs.domains[need].display
        detail = f"Positive screen for {words} on {short_date(latest, on)}"
        identified = datetime.combine(latest, datetime.min.time(), zone)
        due = latest + timedelta(days=rule.referral.days)
        referral = min((r for r in referrals.get(need, ()) if r[0] >= latest), default=None)
        if referral is not None:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=need,
                    status="closed-gap",
                    detail=detail,
                    evidence=(*evidence, referral[1]),
                    identified=identified,
                    due=due,
                    mitigation=f"Referred for {words} on {short_date(referral[0], on)}",
                )
            )
        elif any(f.help_declined for f in current):
            gaps.append(
                Gap(
                    rule=CODE,
                    key=need,
                    status="closed-gap",
                    detail=detail,
                    evidence=evidence,
                    identified=identified,
                    due=due,
                    mitigation=f"The member said on {short_date(latest, on)} that they did "
                    "not want help",
                )
            )
        else:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=need,
                    status=window_status(due, on),
                    detail=f"{detail}; no referral yet — due {short_date(due, on)}",
                    evidence=evidence,
                    identified=identified,
                    due=due,
                )
            )
    return gaps
