"""`Measure/$care-gaps` over HTTP against the session server and its gap engine (the real
rules): the DEQM Gaps In Care document entry by entry, every reference resolving to an
entry's fullUrl, the selection parameters, and bad input refused with a 400."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

GAP_STATUS = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
CARE_GAP = "https://cmfhir.org/fhir/CodeSystem/care-gap"
PROGRAM = "https://cmfhir.org/fhir/CodeSystem/program"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
ALL = ["open-gap", "prospective-gap", "closed-gap"]
WAIT = 30.0


def _post(client: httpx.Client, resource: dict[str, Any]) -> str:
    response = client.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return f"{resource['resourceType']}/{response.json()['id']}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rule(issue: dict[str, Any]) -> str:
    return next(c["code"] for c in issue["code"]["coding"] if c["system"] == CARE_GAP)


def _status(issue: dict[str, Any]) -> str:
    ext = next(e for e in issue["modifierExtension"] if e["url"] == GAP_STATUS)
    code: str = ext["valueCodeableConcept"]["coding"][0]["code"]
    return code


def _discharge(patient: str, days_ago: int) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(days=days_ago)
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": patient},
        "period": {"start": _iso(end - timedelta(days=2)), "end": _iso(end)},
    }


def _wait(
    client: httpx.Client, patient: str, done: Callable[[list[tuple[str, str]]], bool]
) -> None:
    """Poll the member's gaps, as (rule, status), until `done` holds (a bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        found = client.get("DetectedIssue", params={"patient": patient, "_count": 100}).json()
        gaps = [(_rule(e["resource"]), _status(e["resource"])) for e in found.get("entry", [])]
        if done(gaps):
            return
        assert time.monotonic() < deadline, f"gave up waiting; last seen: {gaps}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def member(client: httpx.Client) -> Iterator[dict[str, str]]:
    """An enrolled member with a care manager and an organization: a discharge 20 days ago
    followed by a phone contact (that gap closed), then one 12 days ago with no contact
    since (open), and the engine's other gaps (assessment-overdue, contact-requirement)."""
    organization = _post(client, {"resourceType": "Organization", "name": uuid.uuid4().hex})
    practitioner = _post(client, {"resourceType": "Practitioner"})
    patient = _post(client, {"resourceType": "Patient", "name": [{"family": uuid.uuid4().hex}]})
    episode = _post(
        client,
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "type": [{"coding": [{"system": PROGRAM, "code": "tcm"}]}],
            "patient": {"reference": patient},
            "managingOrganization": {"reference": organization},
            "careManager": {"reference": practitioner},
            "period": {"start": _iso(datetime.now(UTC) - timedelta(days=400))[:10]},
        },
    )
    first = _post(client, _discharge(patient, days_ago=20))
    _wait(client, patient, lambda found: ("transition-follow-up", "open-gap") in found)
    _post(
        client,
        {
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": patient},
            "sender": {"reference": practitioner},
            "sent": _iso(datetime.now(UTC) - timedelta(days=18)),
            "medium": [{"coding": [{"system": MODE, "code": "PHONE"}]}],
        },
    )
    encounter = _post(client, _discharge(patient, days_ago=12))
    _wait(
        client,
        patient,
        lambda found: (
            sorted(s for r, s in found if r == "transition-follow-up") == ["closed-gap", "open-gap"]
        ),
    )
    yield {
        "patient": patient,
        "practitioner": practitioner,
        "organization": organization,
        "episode": episode,
        "encounter": encounter,
        "first": first,
    }


def _care_gaps(client: httpx.Client, **params: Any) -> httpx.Response:
    query = [("periodStart", "2026-01-01"), ("periodEnd", "2030-12-31")]
    for name, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            query.append((name, one))
    return client.get("Measure/$care-gaps", params=query)


def _documents(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    assert all(p["name"] == "return" for p in body.get("parameter", []))
    return [p["resource"] for p in body.get("parameter", [])]


def _resolve(reference: str, full_url: str) -> str:
    """A reference as an absolute URL, relative to the fullUrl of the entry holding it
    (https://hl7.org/fhir/R4/bundle.html#references)."""
    if reference.startswith(("urn:", "http://", "https://")):
        return reference
    return full_url.rsplit("/", 2)[0] + "/" + reference


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [
            ref
            for key, value in node.items()
            for ref in ([value] if key == "reference" else _references(value))
        ]
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    return []


def test_the_document_entry_by_entry(
    client: httpx.Client, base: str, member: dict[str, str]
) -> None:
    from cmfhir.resources.version_validation import validate_for_version

    [bundle] = _documents(_care_gaps(client, subject=member["patient"], status=ALL))
    validate_for_version(bundle, "4.0", expected_type="Bundle")
    assert bundle["type"] == "document"
    assert bundle["identifier"]["system"] == "urn:ietf:rfc:3986"
    assert bundle["identifier"]["value"].startswith("urn:uuid:")
    assert bundle["timestamp"]
    entries = bundle["entry"]
    assert all(e["fullUrl"] for e in entries)
    urls = [e["fullUrl"] for e in entries]
    assert len(set(urls)) == len(urls)
    by_url = {e["fullUrl"]: e["resource"] for e in entries}
    types = [e["resource"]["resourceType"] for e in entries]

    # 1. The Composition.
    assert types[0] == "Composition"
    composition = entries[0]["resource"]
    assert composition["status"] == "final"
    assert composition["type"]["coding"] == [
        {"system": "http://loinc.org", "code": "96315-7", "display": "Gaps in care report"}
    ]
    assert composition["subject"] == {"reference": f"{base}/{member['patient']}"}
    assert composition["date"] == bundle["timestamp"]
    [author] = composition["author"]
    assert by_url[author["reference"]]["resourceType"] == "Organization"
    assert composition["event"][0]["period"] == {"start": "2026-01-01", "end": "2030-12-31"}

    # 2. The MeasureReports, one per section, then the DetectedIssues.
    sections = composition["section"]
    count = len(sections)
    assert count >= 2
    assert types[1 : 1 + count] == ["MeasureReport"] * count
    issues = [e["resource"] for e in entries if e["resource"]["resourceType"] == "DetectedIssue"]
    assert types[1 + count : 1 + count + len(issues)] == ["DetectedIssue"] * len(issues)
    stored = client.get("DetectedIssue", params={"patient": member["patient"], "_count": 100})
    assert sorted(i["id"] for i in issues) == sorted(
        e["resource"]["id"] for e in stored.json()["entry"]
    )
    for section in sections:
        rule = section["code"]["coding"][0]["code"]
        report = by_url[section["focus"]["reference"]]
        assert report["resourceType"] == "MeasureReport"
        assert report["status"] == "complete"
        assert report["type"] == "individual"
        assert report["measure"].startswith(f"https://cmfhir.org/fhir/Measure/{rule}|")
        assert report["subject"] == composition["subject"]
        assert report["period"] == {"start": "2026-01-01", "end": "2030-12-31"}
        assert report["improvementNotation"]["coding"][0]["code"] == "increase"
        mine = [i for i in issues if _rule(i) == rule]
        assert [e["reference"] for e in section["entry"]] == [
            f"{base}/DetectedIssue/{i['id']}" for i in mine
        ]
        counts = {
            p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][0]["population"]
        }
        closed = sum(1 for i in mine if _status(i) == "closed-gap")
        assert counts == {
            "initial-population": len(mine),
            "denominator": len(mine),
            "numerator": closed,
        }
        for issue in mine:
            # DEQM: the evidence leads with the rule's MeasureReport.
            assert issue["evidence"][0]["detail"][0] == section["focus"]
            assert issue["code"]["coding"][0]["code"] == "CAREGAP"
            assert _status(issue) in ALL

    # 3. The transition gaps cite their discharges, which are in the document; the first one
    # closed (numerator 1 of 2), the second open.
    transitions = [i for i in issues if _rule(i) == "transition-follow-up"]
    assert sorted(_status(i) for i in transitions) == ["closed-gap", "open-gap"]
    for discharge in (member["first"], member["encounter"]):
        assert f"{base}/{discharge}" in by_url
        assert any({"reference": discharge} in i["evidence"][0]["detail"] for i in transitions)
    [section] = [s for s in sections if s["code"]["coding"][0]["code"] == "transition-follow-up"]
    report = by_url[section["focus"]["reference"]]
    assert [p["count"] for p in report["group"][0]["population"]] == [2, 2, 1]

    # 4. Stored resources keep their own URL; the care manager and the Patient are there.
    assert by_url[f"{base}/{member['patient']}"]["resourceType"] == "Patient"
    assert by_url[f"{base}/{member['practitioner']}"]["resourceType"] == "Practitioner"
    for entry in entries:
        resource = entry["resource"]
        if resource["resourceType"] not in ("Composition", "MeasureReport", "Organization"):
            assert entry["fullUrl"] == f"{base}/{resource['resourceType']}/{resource['id']}"

    # 5. Every reference of the Composition, MeasureReports and DetectedIssues resolves.
    for entry in entries:
        if entry["resource"]["resourceType"] in ("Composition", "MeasureReport", "DetectedIssue"):
            for reference in _references(entry["resource"]):
                assert _resolve(reference, entry["fullUrl"]) in by_url, reference


def test_selection_parameters(client: httpx.Client, base: str, member: dict[str, str]) -> None:
    patient = member["patient"]

    def rules(response: httpx.Response) -> list[str]:
        [bundle] = _documents(response)
        return [s["code"]["coding"][0]["code"] for s in bundle["entry"][0]["resource"]["section"]]

    every = rules(_care_gaps(client, subject=patient, status=ALL))
    assert rules(
        _care_gaps(client, subject=patient, status=ALL, measureId="assessment-overdue")
    ) == ["assessment-overdue"]
    assert rules(
        _care_gaps(
            client,
            subject=patient,
            status=ALL,
            measureUrl="https://cmfhir.org/fhir/Measure/transition-follow-up",
            measureIdentifier=f"{CARE_GAP}|assessment-overdue",
        )
    ) == ["transition-follow-up", "assessment-overdue"]
    assert rules(_care_gaps(client, subject=patient, status=ALL, topic="transition-follow-up")) == [
        "transition-follow-up"
    ]
    assert rules(_care_gaps(client, subject=patient, status=ALL, program="tcm")) == every
    assert rules(_care_gaps(client, subject=patient, status=ALL, program=f"{PROGRAM}|tcm")) == every
    # Only the statuses asked for: the closed transition gap alone.
    [closed] = _documents(
        _care_gaps(client, subject=patient, status="closed-gap", measureId="transition-follow-up")
    )
    [section] = closed["entry"][0]["resource"]["section"]
    [issue] = [e for e in closed["entry"] if e["resource"]["resourceType"] == "DetectedIssue"]
    assert _status(issue["resource"]) == "closed-gap"
    assert section["entry"] == [{"reference": issue["fullUrl"]}]
    # The same member through their care manager or their enrollment's organization.
    for params in (
        {"practitioner": member["practitioner"]},
        {"organization": member["organization"]},
    ):
        documents = _documents(_care_gaps(client, status="open-gap", **params))
        subjects = [d["entry"][0]["resource"]["subject"]["reference"] for d in documents]
        assert subjects == [f"{base}/{patient}"]
    # A period that ended before the gaps were identified holds none.
    early = client.get(
        "Measure/$care-gaps",
        params={
            "periodStart": "2020-01-01",
            "periodEnd": "2020-12-31",
            "subject": patient,
            "status": "open-gap",
        },
    )
    assert _documents(early) == []


def test_post_with_a_group(client: httpx.Client, member: dict[str, str]) -> None:
    group = _post(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": member["patient"]}}],
        },
    )
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "periodStart", "valueDate": "2026-01-01"},
            {"name": "periodEnd", "valueDate": "2030-12-31"},
            {"name": "subject", "valueString": group},
            {"name": "status", "valueCode": "open-gap"},
            {"name": "measureId", "valueString": "transition-follow-up"},
        ],
    }
    [bundle] = _documents(client.post("Measure/$care-gaps", json=body))
    [section] = bundle["entry"][0]["resource"]["section"]
    assert section["code"]["coding"][0]["code"] == "transition-follow-up"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "periodStart": None},
            "periodStart",
            id="no-period-start",
        ),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "periodEnd": "soon"},
            "periodEnd",
            id="bad-period-end",
        ),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "periodEnd": "2025-01-01"},
            "periodEnd",
            id="end-before-start",
        ),
        pytest.param({"subject": "Patient/x"}, "status", id="no-status"),
        pytest.param({"subject": "Patient/x", "status": "lost-gap"}, "status", id="bad-status"),
        pytest.param({"subject": "Encounter/x", "status": "open-gap"}, "subject", id="bad-subject"),
        pytest.param({"subject": "Group/missing", "status": "open-gap"}, "subject", id="no-group"),
        pytest.param(
            {"practitioner": "Patient/x", "status": "open-gap"},
            "practitioner",
            id="bad-practitioner",
        ),
        pytest.param(
            {"organization": "x", "status": "open-gap"}, "organization", id="bad-organization"
        ),
        pytest.param({"status": "open-gap"}, "subject", id="no-population"),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "measureId": "nope"},
            "measureId",
            id="unknown-measure-id",
        ),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "measureUrl": "http://x/M"},
            "measureUrl",
            id="unknown-measure-url",
        ),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "topic": "screening"},
            "topic",
            id="unknown-topic",
        ),
        pytest.param(
            {"subject": "Patient/x", "status": "open-gap", "program": "pcm"},
            "program",
            id="unknown-program",
        ),
    ],
)
def test_bad_input_is_refused(client: httpx.Client, params: dict[str, Any], named: str) -> None:
    query = {"periodStart": "2026-01-01", "periodEnd": "2030-12-31", **params}
    response = client.get(
        "Measure/$care-gaps", params={k: v for k, v in query.items() if v is not None}
    )
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = outcome["issue"]
    assert issue["expression"] == [named]
