"""`medication-adherence`: proportion of days covered (PDC) by MedicationDispense per
therapeutic class over the trailing measurement period, computed the PQA way.

- A class is measured when it has at least the configured number of fills on different
  dates in the period, and the treatment period (first fill to the end of the period) is at
  least the configured number of days.
- Fills of the same drug that overlap (early refills) are shifted to start the day after the
  previous supply ends; fills of different drugs in one class are not shifted; each day
  counts once; coverage stops at the end of the period.
- Classes are configured code lists, the ValueSets `profiles/content/ValueSet-pdc-*.json`
  (a code in none is its own class, keyed by the code). A dispense matches by its
  medication's code, else by the ingredients of its Medication; a combination product
  counts once in each class it has a target ingredient of;
  members with a configured exclusion (hospice, ESRD, insulin, sacubitril/valsartan ...) in
  the period are not measured for the classes it applies to.

PDC below the class threshold opens the gap; at or above it the gap is closed, or
prospective when the supply has already run out (it will fall below without a refill).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cmfhir.gaps.config import CareGapConfig, Exclusion, MedicationAdherence, matches_any
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    Resource,
    active_enrollment,
    codings,
    concept_text,
    has_coding,
    local_date,
    medication_concept,
    medication_ingredients,
    reference,
    short_date,
    today,
)

CODE = "medication-adherence"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {
        "EpisodeOfCare",
        "MedicationDispense",
        "Medication",
        "Condition",
        "Procedure",
        "ServiceRequest",
        "Encounter",
    }
)

_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Fill:
    day: date
    supply: int
    drug: str
    reference: str


def _drug_index(rule: MedicationAdherence) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (coding.system, coding.code): (class_id, drug)
        for class_id, drug_class in rule.classes.items()
        for drug, codes in drug_class.drugs.items()
        for coding in codes
    }


def _keys(found: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(str(c.get("system")), str(c.get("code"))) for c in found if c.get("code") is not None]


def _days_supply(dispense: Resource) -> int:
    value = (dispense.get("daysSupply") or {}).get("value")
    return int(value) if isinstance(value, int | float) and value > 0 else 0


def _overlaps(resource: Resource, start: date, end: date, zone: Any) -> bool:
    """Whether what a resource records happened in [start, end]: a period (open-ended
    when it has no end) or a single date; undated counts."""
    period = resource.get("period") or resource.get("performedPeriod") or {}
    single = (
        resource.get("performedDateTime")
        or resource.get("occurrenceDateTime")
        or resource.get("authoredOn")
    )
    begin = local_date(period.get("start") or single, zone)
    finish = local_date(period.get("end"), zone) if period else begin
    if begin is None and finish is None:
        return True
    return (begin is None or begin <= end) and (finish is None or finish >= start)


def _exclusion_evidence(
    snapshot: MemberSnapshot,
    rule: MedicationAdherence,
    exclusion: Exclusion,
    start: date,
    end: date,
    dispensed: Sequence[tuple[list[Mapping[str, Any]], str]],
    zone: Any,
) -> str | None:
    """A reference to what puts the member under `exclusion` in the period, if anything."""
    if exclusion.codes:
        for condition in snapshot.of("Condition"):
            status = codings(condition.get("clinicalStatus"))
            verification = codings(condition.get("verificationStatus"))
            clinical = rule.condition_clinical_statuses
            if status and not any(c.get("code") in clinical for c in status):
                continue
            if any(c.get("code") in rule.ignored_statuses for c in verification):
                continue
            if has_coding(condition.get("code"), exclusion.codes):
                return reference(condition)
        for kind, elements in (
            ("Procedure", ("code",)),
            ("ServiceRequest", ("code",)),
            ("EpisodeOfCare", ("type",)),
            ("Encounter", ("type", "hospitalization")),
        ):
            for resource in snapshot.of(kind):
                if resource.get("status") in rule.ignored_statuses:
                    continue
                concepts = []
                for element in elements:
                    value = resource.get(element)
                    if element == "hospitalization" and isinstance(value, Mapping):
                        value = value.get("dischargeDisposition")
                    concepts.append(value)
                if not any(has_coding(c, exclusion.codes) for c in concepts):
                    continue
                if _overlaps(resource, start, end, zone):
                    return reference(resource)
    for found, ref in dispensed:
        if any(matches_any(exclusion.dispensed, c) for c in found):
            return ref
    return None


def _covered(fills: Sequence[Fill], first: date, last: date) -> set[date]:
    """Days from `first` to `last` covered: same-drug overlaps shifted forward, each day
    counted once across drugs."""
    by_drug: dict[str, list[Fill]] = defaultdict(list)
    for fill in fills:
        by_drug[fill.drug].append(fill)
    covered: set[date] = set()
    for drug_fills in by_drug.values():
        supplied_to: date | None = None
        for fill in sorted(drug_fills, key=lambda f: (f.day, f.reference)):
            begin = fill.day if supplied_to is None else max(fill.day, supplied_to + _DAY)
            supplied_to = begin + timedelta(days=fill.supply) - _DAY
            day = max(begin, first)
            while day <= min(supplied_to, last):
                covered.add(day)
                day += _DAY
    return covered


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.medication_adherence
    zone = config.zone
    on = today(as_of, zone)
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    end = on
    start = end - timedelta(days=rule.measurement.days) + _DAY
    index = _drug_index(rule)
    fills: dict[str, list[Fill]] = defaultdict(list)
    names: dict[str, str] = {}
    dispensed: list[tuple[list[Mapping[str, Any]], str]] = []
    for dispense in snapshot.of("MedicationDispense"):
        if dispense.get("status") not in rule.dispense_statuses:
            continue
        day = local_date(dispense.get("whenHandedOver") or dispense.get("whenPrepared"), zone)
        if day is None or not start <= day <= end:
            continue
        concept = medication_concept(snapshot, dispense)
        product = codings(concept)
        found = [*product, *medication_ingredients(snapshot, dispense)]
        dispensed.append((found, reference(dispense)))
        supply = _days_supply(dispense)
        keyed = _keys(found)
        if not keyed or not supply:
            continue
        # The product's own code decides; else each class its ingredients belong to, with
        # the first target ingredient of that class as the drug.
        matches = [index[k] for k in _keys(product) if k in index][:1] or [
            index[k] for k in keyed if k in index
        ]
        if not matches:
            own = next((k for k in keyed if k[0] == rule.rxnorm_system), keyed[0])
            matches = [(own[1], own[1])]
            names.setdefault(own[1], concept_text(concept, own[1]))
        seen: set[str] = set()
        for class_id, drug in matches:
            if class_id not in seen:
                seen.add(class_id)
                fills[class_id].append(Fill(day, supply, drug, reference(dispense)))

    gaps: list[Gap] = []
    for class_id in sorted(fills):
        class_fills = fills[class_id]
        first = min(f.day for f in class_fills)
        if len({f.day for f in class_fills}) < rule.minimum_fills.threshold:
            continue
        treatment = (end - first).days + 1
        if treatment < rule.minimum_treatment.days:
            continue
        drug_class = rule.classes.get(class_id)
        name = drug_class.display if drug_class else names.get(class_id, class_id)
        ordered = sorted(class_fills, key=lambda f: (f.day, f.reference))
        evidence = tuple(f.reference for f in ordered)
        identified = datetime.combine(first, datetime.min.time(), zone)
        excluded = next(
            (
                (exclusion, evidence_of)
                for exclusion in rule.exclusions.values()
                if exclusion.applies(class_id)
                and (
                    evidence_of := _exclusion_evidence(
                        snapshot, rule, exclusion, start, end, dispensed, zone
                    )
                )
            ),
            None,
        )
        if excluded is not None:
            exclusion, excluded_by = excluded
            gaps.append(
                Gap(
                    rule=CODE,
                    key=class_id,
                    status="closed-gap",
                    detail=f"Adherence to {name} not measured: {exclusion.display}",
                    evidence=(*evidence, excluded_by),
                    identified=identified,
                    mitigation=f"Excluded from the adherence measure: {exclusion.display}",
                )
            )
            continue
        covered = _covered(class_fills, first, end)
        pdc = len(covered) / treatment
        threshold = rule.threshold(class_id).threshold
        since = short_date(first, on)
        summary = f"{name}: {pdc:.0%} of days covered since {since}"
        if pdc < threshold:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=class_id,
                    status="open-gap",
                    detail=f"{summary} (below {threshold:.0%})",
                    evidence=evidence,
                    identified=identified,
                )
            )
            continue
        if on not in covered:
            last = max(covered) if covered else first
            # Uncovered days from today on that keep the PDC at the threshold.
            spare = math.floor(len(covered) / threshold) - treatment
            due = on + timedelta(days=max(spare, 0))
            gaps.append(
                Gap(
                    rule=CODE,
                    key=class_id,
                    status="prospective-gap",
                    detail=f"{summary}; supply ran out on {short_date(last, on)} — refill by "
                    f"{short_date(due, on)} to stay at {threshold:.0%}",
                    evidence=evidence,
                    identified=identified,
                    due=due,
                )
            )
            continue
        gaps.append(
            Gap(
                rule=CODE,
                key=class_id,
                status="closed-gap",
                detail=summary,
                evidence=evidence,
                identified=identified,
                mitigation=f"{pdc:.0%} of days covered, at or above {threshold:.0%}",
            )
        )
    return gaps
