"""The Gaps In Care document built without a database: URNs for every entry when no base
URL is known (inside a batch), references rewritten to them, and a gap whose evidence is
gone keeping it as words."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from cmfhir.gaps import detected_issue as di
from cmfhir.gaps.care_gaps_document import GapsReport, document, references
from cmfhir.gaps.model import Gap, GapStatus

MEASURE = {
    "resourceType": "Measure",
    "id": "transition-follow-up",
    "url": "https://cmfhir.org/fhir/Measure/transition-follow-up",
    "version": "0.1.0",
    "title": "Transition follow-up",
}
WHEN = datetime(2026, 10, 3, tzinfo=UTC)


def _issue(key: str, evidence: tuple[str, ...], status: GapStatus = "open-gap") -> dict[str, Any]:
    gap = Gap("transition-follow-up", key, status, "Discharged", evidence)
    return di.build(
        "p1",
        gap,
        identified=WHEN,
        care_manager="Practitioner/gone",
        closed_at=WHEN if status == "closed-gap" else None,
    )


def test_without_a_base_every_entry_has_a_urn_and_every_reference_resolves() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    encounter = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}
    issues = [
        _issue("Encounter/e1", ("Encounter/e1",)),
        _issue("Encounter/e2", ("Encounter/e2",), "closed-gap"),
    ]
    report = GapsReport(
        patient,
        issues,
        {"Encounter/e1": encounter},
        [MEASURE],
        (date(2026, 1, 1), date(2026, 12, 31)),
        "2026-10-12T12:00:00.000Z",
    )
    bundle = document(report, None)
    entries = bundle["entry"]
    urls = [e["fullUrl"] for e in entries]
    assert all(u.startswith("urn:uuid:") for u in urls)
    assert len(set(urls)) == len(urls)
    assert [e["resource"]["resourceType"] for e in entries] == [
        "Composition",
        "MeasureReport",
        "DetectedIssue",
        "DetectedIssue",
        "Patient",
        "Organization",
        "Encounter",
    ]
    for entry in entries:
        for reference in references(entry["resource"]):
            assert reference in urls, reference
    report_entry = entries[1]["resource"]
    counts = [p["count"] for p in report_entry["group"][0]["population"]]
    assert counts == [2, 2, 1]
    assert report_entry["group"][0]["measureScore"] == {"value": 0.5}
    assert report_entry["measure"] == "https://cmfhir.org/fhir/Measure/transition-follow-up|0.1.0"
    assert report_entry["evaluatedResource"] == [{"reference": urls[-1]}]
    # The deleted encounter and the departed care manager are kept as words.
    closed = entries[3]["resource"]
    assert closed["evidence"][0]["detail"][1:] == [{"display": "Encounter/e2 (not available)"}]
    assert closed["extension"][0]["valueReference"] == {
        "display": "Practitioner/gone (not available)"
    }
    # The stored resources are not changed by the rewrite.
    assert issues[0]["patient"] == {"reference": "Patient/p1"}
    assert encounter["subject"] == {"reference": "Patient/p1"}


def test_with_a_base_stored_resources_keep_their_references() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    issue = _issue("Encounter/e1", ())
    report = GapsReport(
        patient, [issue], {}, [MEASURE], (date(2026, 1, 1), date(2026, 12, 31)), "2026-10-12Z"
    )
    bundle = document(report, "http://h/fhir")
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    assert by_type["DetectedIssue"]["fullUrl"] == f"http://h/fhir/DetectedIssue/{issue['id']}"
    assert by_type["DetectedIssue"]["resource"]["patient"] == {"reference": "Patient/p1"}
    assert by_type["Composition"]["resource"]["subject"] == {
        "reference": "http://h/fhir/Patient/p1"
    }
    assert by_type["MeasureReport"]["fullUrl"].startswith("urn:uuid:")
    assert "evaluatedResource" not in by_type["MeasureReport"]["resource"]


def test_the_document_is_valid_fhir() -> None:
    from cmfhir.resources.version_validation import validate_for_version

    patient = {"resourceType": "Patient", "id": "p1"}
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    }
    report = GapsReport(
        patient,
        [_issue("Encounter/e1", ("Encounter/e1",))],
        {"Encounter/e1": encounter},
        [MEASURE],
        (date(2026, 1, 1), date(2026, 12, 31)),
        "2026-10-12T12:00:00.000Z",
    )
    for base in ("http://h/fhir", None):
        bundle = document(report, base)
        validate_for_version(bundle, "4.0", expected_type="Bundle")
        for version in ("4.0", "4.3"):
            for entry in bundle["entry"]:
                validate_for_version(entry["resource"], version)
