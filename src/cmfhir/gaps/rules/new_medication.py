"""`new-medication`: a medication statement, request or dispense whose code was not recorded
for the member in the configured prior days (NC data-system guidance: "new medications"),
until a medication reconciliation (a completed Procedure, SNOMED CT 430193006 by default) on
or after it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    Resource,
    active_enrollment,
    codings,
    concept_text,
    has_coding,
    local_date,
    medication_concept,
    reference,
    short_date,
    today,
)

CODE = "new-medication"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset(
    {
        "EpisodeOfCare",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationDispense",
        "Medication",
        "Procedure",
    }
)

_DATES = {
    "MedicationDispense": ("whenHandedOver", "whenPrepared"),
    "MedicationRequest": ("authoredOn",),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod", "dateAsserted"),
}


def _when(resource: Resource) -> Any:
    for element in _DATES.get(str(resource.get("resourceType")), ()):
        value = resource.get(element)
        if isinstance(value, dict):
            value = value.get("start")
        if value:
            return value
    return None


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.new_medication
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    records: list[tuple[date, str, frozenset[tuple[str, str]], str]] = []
    for resource_type in rule.resource_types:
        for resource in snapshot.of(resource_type):
            if resource.get("status") in rule.ignored_statuses:
                continue
            day = local_date(_when(resource), zone)
            concept = medication_concept(snapshot, resource)
            codes = frozenset(
                (str(c.get("system")), str(c.get("code")))
                for c in codings(concept)
                if c.get("code")
            )
            if day is None or day > on or not codes:
                continue
            records.append((day, reference(resource), codes, concept_text(concept, "a medicine")))
    records.sort(key=lambda r: (r[0], r[1]))

    reconciliations: list[tuple[date, str]] = []
    for procedure in snapshot.of("Procedure"):
        if procedure.get("status") not in rule.procedure_statuses:
            continue
        if not has_coding(procedure.get("code"), rule.reconciliation_procedures.codes):
            continue
        period = procedure.get("performedPeriod") or {}
        day = local_date(
            procedure.get("performedDateTime") or period.get("end") or period.get("start"), zone
        )
        if day is not None and day <= on:
            reconciliations.append((day, reference(procedure)))
    reconciliations.sort()

    gaps: list[Gap] = []
    for index, (day, key, codes, name) in enumerate(records):
        if (on - day).days > rule.lookback.days:
            continue
        recorded_before = any(
            (day - prior_day).days <= rule.prior_records.days and prior_codes & codes
            for prior_day, _, prior_codes, _ in records[:index]
        )
        if recorded_before:
            continue
        kind = key.partition("/")[0].removeprefix("Medication").lower()
        detail = f"New medication: {name} ({kind} on {short_date(day, on)})"
        identified = datetime.combine(day, datetime.min.time(), zone)
        reconciled = next((r for r in reconciliations if r[0] >= day), None)
        if reconciled is not None:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=detail,
                    evidence=(key, reconciled[1]),
                    identified=identified,
                    mitigation=f"Medications reconciled on {short_date(reconciled[0], on)}",
                )
            )
            continue
        gaps.append(
            Gap(
                rule=CODE,
                key=key,
                status="open-gap",
                detail=f"{detail}; not reconciled yet",
                evidence=(key,),
                identified=identified,
            )
        )
    return gaps
