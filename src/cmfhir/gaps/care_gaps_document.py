"""One member's answer to `Measure/$care-gaps`: the Da Vinci DEQM 5.0.0 Gaps In Care Bundle
(https://hl7.org/fhir/us/davinci-deqm/STU5/StructureDefinition-gaps-bundle-deqm.html), a
document Bundle whose first entry is the Gaps In Care Composition (LOINC 96315-7, one
section per Measure focused on that Measure's individual MeasureReport and listing its
DetectedIssues), then the MeasureReports, the DetectedIssues (their evidence led by the
MeasureReport), the Patient, the reporting Organization, the care managers and the
resources the gaps cite. Every entry has a fullUrl and every reference of the Composition,
MeasureReports and DetectedIssues resolves to an entry. Pure: the caller reads the store."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cmfhir.gaps import detected_issue as di

__all__ = ["REPORTER_ID", "GapsReport", "document", "references"]

LOINC = "http://loinc.org"
MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
# The organization the reports are "by": the server itself (DEQM's reporting vendor; HAPI
# calls it the care-gaps reporter). It is not a stored resource, so its fullUrl is a URN.
REPORTER_ID = "cmfhir-care-gaps"
_NAMESPACE = uuid.UUID("0e6f7a43-2f63-5b52-a4a6-3b0c41a1d7e2")


@dataclass(frozen=True, slots=True)
class GapsReport:
    """What one member's document is made of, as read from the store."""

    patient: Mapping[str, Any]
    issues: Sequence[Mapping[str, Any]]  # the member's DetectedIssues, oldest first
    related: Mapping[str, Mapping[str, Any]]  # "Type/id" -> resource (evidence, care managers)
    measures: Sequence[Mapping[str, Any]]  # every Measure asked for, in order
    period: tuple[date, date]
    now: str  # the instant of the report


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(parts))}"


def _ref(resource: Mapping[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def references(node: Any) -> list[str]:
    """Every `reference` string in a resource (in order, nested elements included)."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(references(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(references(item))
    return found


def _rewrite(node: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                mapping.get(v, v)
                if k == "reference" and isinstance(v, str)
                else _rewrite(v, mapping)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(item, mapping) for item in node]
    return node


def _reporter() -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": REPORTER_ID,
        "active": True,
        "name": "cmfhir care-gap engine",
    }


def _measure_report(
    measure: Mapping[str, Any],
    patient_ref: str,
    issues: Sequence[Mapping[str, Any]],
    evidence: Sequence[str],
    report: GapsReport,
    reporter_url: str,
) -> dict[str, Any]:
    """The DEQM individual MeasureReport of one rule for one member: every gap is one
    episode in the initial population and denominator; a closed one is also in the
    numerator (improvement notation increase: met = no gap)."""
    start, end = report.period
    met = sum(1 for i in issues if di.gap_status(dict(i)) == "closed-gap")
    notation = measure.get("improvementNotation") or {
        "coding": [{"system": IMPROVEMENT, "code": "increase"}]
    }

    def population(code: str, count: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": MEASURE_POPULATION, "code": code}]},
            "count": count,
        }

    canonical = str(measure["url"])
    if measure.get("version"):
        canonical += f"|{measure['version']}"
    return {
        "resourceType": "MeasureReport",
        "id": str(uuid.uuid5(_NAMESPACE, f"{patient_ref}/{measure['id']}/{report.now}")),
        "status": "complete",
        "type": "individual",
        "measure": canonical,
        "subject": {"reference": patient_ref},
        "date": report.now,
        "reporter": {"reference": reporter_url},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "improvementNotation": notation,
        "group": [
            {
                "population": [
                    population("initial-population", len(issues)),
                    population("denominator", len(issues)),
                    population("numerator", met),
                ],
                "measureScore": {"value": round(met / len(issues), 4)},
            }
        ],
        **({"evaluatedResource": [{"reference": r} for r in evidence]} if evidence else {}),
    }


def _issue_copy(issue: Mapping[str, Any], report_url: str, present: set[str]) -> dict[str, Any]:
    """The DetectedIssue as the document shows it: its evidence led by the MeasureReport
    (DEQM: evidence.detail references the individual MeasureReport), and any reference to
    a resource the document cannot hold (deleted, or not visible to the caller) kept as
    words only."""
    copied = copy.deepcopy(dict(issue))
    details = [{"reference": report_url}]
    for evidence in copied.get("evidence") or ():
        for detail in evidence.get("detail") or ():
            target = detail.get("reference")
            if isinstance(target, str) and target not in present:
                details.append({"display": f"{target} (not available)"})
            else:
                details.append(detail)
    copied["evidence"] = [{"detail": details}]
    for extension in copied.get("extension") or ():
        value = extension.get("valueReference") or {}
        if isinstance(value.get("reference"), str) and value["reference"] not in present:
            extension["valueReference"] = {"display": f"{value['reference']} (not available)"}
    return copied


def document(report: GapsReport, base: str | None) -> dict[str, Any]:
    """The Gaps In Care Bundle of one member. With `base` (the server's FHIR base URL) a
    stored resource's fullUrl is `base/Type/id`, so the references it holds resolve as they
    are; without one, every entry gets a URN and the references are rewritten to them."""
    patient_ref = _ref(report.patient)
    reporter = _reporter()
    reporter_url = _urn("Organization", REPORTER_ID)
    present = {patient_ref, *report.related}

    def full_url(resource_ref: str) -> str:
        return f"{base}/{resource_ref}" if base else _urn(resource_ref)

    sections: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    for measure in report.measures:
        mine = [i for i in report.issues if di.rule_of(dict(i)) == measure["id"]]
        if not mine:
            continue
        evidence = list(
            dict.fromkeys(
                target
                for issue in mine
                for target in references(issue.get("evidence") or [])
                if target in report.related
            )
        )
        measure_report = _measure_report(measure, patient_ref, mine, evidence, report, reporter_url)
        report_url = _urn("MeasureReport", measure_report["id"])
        reports.append(measure_report)
        issues.extend(_issue_copy(i, report_url, present) for i in mine)
        sections.append(
            {
                "title": measure.get("title", measure["id"]),
                "code": {"coding": [{"system": di.CARE_GAP_SYSTEM, "code": measure["id"]}]},
                "focus": {"reference": report_url},
                "entry": [{"reference": _ref(i)} for i in mine],
            }
        )
    start, end = report.period
    composition = {
        "resourceType": "Composition",
        "id": str(uuid.uuid5(_NAMESPACE, f"{patient_ref}/composition/{report.now}")),
        "status": "final",
        "type": {
            "coding": [{"system": LOINC, "code": "96315-7", "display": "Gaps in care report"}]
        },
        "subject": {"reference": patient_ref},
        "date": report.now,
        "author": [{"reference": reporter_url}],
        "title": "Care Gap Report",
        "custodian": {"reference": reporter_url},
        "event": [{"period": {"start": start.isoformat(), "end": end.isoformat()}}],
        "section": sections,
    }
    mapping = {
        ref: full_url(ref) for ref in [patient_ref, *(_ref(i) for i in issues), *report.related]
    }
    # The Composition and MeasureReports have URNs for fullUrls, against which a relative
    # reference resolves to nothing: theirs are made absolute. The stored resources keep
    # theirs (relative to their own fullUrl) unless they have URNs too.
    generated = [_rewrite(composition, mapping), *(_rewrite(r, mapping) for r in reports)]
    stored = [
        *((full_url(_ref(i)), i) for i in issues),
        (full_url(patient_ref), dict(report.patient)),
        *((full_url(ref), dict(report.related[ref])) for ref in sorted(report.related)),
    ]
    if not base:
        stored = [(url, _rewrite(resource, mapping)) for url, resource in stored]
    entries: list[tuple[str, dict[str, Any]]] = [
        (_urn(_ref(resource)), resource) for resource in generated
    ]
    entries += stored[: len(issues) + 1]
    entries.append((reporter_url, reporter))
    entries += stored[len(issues) + 1 :]
    identifier = _urn(patient_ref, "gaps", report.now)
    return {
        "resourceType": "Bundle",
        "id": identifier.removeprefix("urn:uuid:"),
        "meta": {"lastUpdated": report.now},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": identifier},
        "type": "document",
        "timestamp": report.now,
        "entry": [{"fullUrl": url, "resource": resource} for url, resource in entries],
    }
