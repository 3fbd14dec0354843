"""The gap engine end to end over HTTP: writes that open and close a gap show up as a
DetectedIssue (within a bounded wait, no timing asserted), replays and a second server
change nothing, and gaps follow transactions and deletes. Rules: tests/gaps/sample_rules.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cmfhir.config import Settings
from conftest import RunningServer, _new_database, _plain
from serving import run_cmfhir

GAP_STATUS = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
CARE_MANAGER = "https://cmfhir.org/fhir/StructureDefinition/care-manager"
WAIT = 20.0


@pytest.fixture(scope="module")
def gap_settings(admin_url: str) -> Iterator[Settings]:
    with _new_database(admin_url) as url:
        yield Settings(database_url=url, gap_rules="sample_rules")


@pytest.fixture(scope="module")
def gap_base(gap_settings: Settings) -> Iterator[str]:
    with RunningServer(gap_settings) as running:
        yield running.base


@pytest.fixture(scope="module")
def http(gap_base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gap_base, timeout=60) as client:
        yield client


def _sql(url: str, statement: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(_plain(url))
        try:
            return list(await conn.fetch(statement))
        finally:
            await conn.close()

    return asyncio.run(run())


def _post(http: httpx.Client, resource: dict[str, Any]) -> str:
    response = http.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return f"{resource['resourceType']}/{response.json()['id']}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _member(http: httpx.Client, *, manager: str | None = "new") -> tuple[str, str | None]:
    patient = _post(http, {"resourceType": "Patient", "name": [{"family": uuid.uuid4().hex}]})
    practitioner = None
    if manager:
        practitioner = _post(http, {"resourceType": "Practitioner"})
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"reference": patient},
        "period": {"start": "2026-01-01"},
    }
    if practitioner:
        episode["careManager"] = {"reference": practitioner}
    _post(http, episode)
    return patient, practitioner


def _discharge(patient: str, days_ago: float) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(days=days_ago)
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": patient},
        "period": {"start": _iso(end - timedelta(days=2)), "end": _iso(end)},
    }


def _contact(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": patient},
        "sent": _iso(datetime.now(UTC)),
    }


def _issues(http: httpx.Client, patient: str) -> list[dict[str, Any]]:
    response = http.get("DetectedIssue", params={"patient": patient, "_count": 100})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _status(issue: dict[str, Any]) -> str:
    ext = next(e for e in issue["modifierExtension"] if e["url"] == GAP_STATUS)
    code: str = ext["valueCodeableConcept"]["coding"][0]["code"]
    return code


def _wait_for(
    http: httpx.Client, patient: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Poll the member's DetectedIssues until `done` holds (a bounded wait)."""
    deadline = time.monotonic() + WAIT
    while True:
        issues = _issues(http, patient)
        if done(issues):
            return issues
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; last seen: {issues}")
        time.sleep(0.1)


def _by_rule(issues: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [i for i in issues if any(c["code"] == rule for c in i["code"]["coding"])]


def _settled(url: str) -> None:
    """Wait until the engine has read every event and evaluated every queued member."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        behind = _sql(
            url,
            "SELECT (SELECT count(*) FROM gap_member) + (SELECT count(*) FROM event e, consumer c "
            "WHERE c.name = 'gaps' AND (e.xid, e.seq) > (c.xid, c.seq)) AS n",
        )[0]["n"]
        if behind == 0:
            return
        time.sleep(0.1)
    raise AssertionError("the engine did not settle")


def test_a_discharge_opens_a_gap_and_a_contact_closes_it(http: httpx.Client) -> None:
    patient, practitioner = _member(http)
    encounter = _post(http, _discharge(patient, days_ago=2))
    issues = _wait_for(http, patient, lambda found: bool(_by_rule(found, "transition-follow-up")))
    [issue] = _by_rule(issues, "transition-follow-up")
    assert _status(issue) == "prospective-gap"
    assert issue["status"] == "final"
    assert issue["code"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "CAREGAP",
        "display": "Care Gaps",
    }
    assert issue["code"]["coding"][1] == {
        "system": "https://cmfhir.org/fhir/CodeSystem/care-gap",
        "code": "transition-follow-up",
    }
    assert issue["identifier"] == [
        {
            "system": "https://cmfhir.org/fhir/care-gap-id",
            "value": f"{patient.split('/')[1]}/transition-follow-up/{encounter}",
        }
    ]
    assert issue["patient"] == {"reference": patient}
    assert issue["evidence"] == [{"detail": [{"reference": encounter}]}]
    assert issue["detail"].startswith("Discharged on ")
    assert "mitigation" not in issue
    assert issue["extension"] == [
        {"url": CARE_MANAGER, "valueReference": {"reference": practitioner}}
    ]

    contact = _post(http, _contact(patient))
    issues = _wait_for(
        http,
        patient,
        lambda found: (
            [_status(i) for i in _by_rule(found, "transition-follow-up")] == ["closed-gap"]
        ),
    )
    [closed] = _by_rule(issues, "transition-follow-up")
    assert closed["id"] == issue["id"]
    assert closed["evidence"] == [{"detail": [{"reference": encounter}, {"reference": contact}]}]
    assert closed["mitigation"][0]["action"]["text"].startswith("Contacted on ")


def test_an_old_discharge_is_an_open_gap_and_the_worklist_finds_it(http: httpx.Client) -> None:
    patient, practitioner = _member(http)
    _post(http, _discharge(patient, days_ago=10))
    _wait_for(http, patient, lambda found: bool(_by_rule(found, "transition-follow-up")))
    worklist = http.get(
        "DetectedIssue",
        params={
            "care-manager": practitioner,
            "gap-status": "open-gap,prospective-gap",
            "_sort": "-identified",
        },
    )
    assert worklist.status_code == 200, worklist.text
    found = [e["resource"] for e in worklist.json()["entry"]]
    assert [_status(i) for i in found] == ["open-gap"]
    assert found[0]["patient"]["reference"] == patient
    closed = http.get(
        "DetectedIssue", params={"care-manager": practitioner, "gap-status": "closed-gap"}
    )
    assert closed.json().get("entry", []) == []


def test_reassigning_the_care_manager_restamps_open_gaps(http: httpx.Client) -> None:
    patient, first = _member(http)
    _post(http, _discharge(patient, days_ago=1))
    _wait_for(http, patient, lambda found: bool(_by_rule(found, "transition-follow-up")))
    second = _post(http, {"resourceType": "Practitioner"})
    [episode] = http.get("EpisodeOfCare", params={"patient": patient}).json()["entry"]
    changed = dict(episode["resource"], careManager={"reference": second})
    assert http.put(f"EpisodeOfCare/{changed['id']}", json=changed).status_code == 200
    _wait_for(
        http,
        patient,
        lambda found: (
            [i.get("extension") for i in _by_rule(found, "transition-follow-up")]
            == [[{"url": CARE_MANAGER, "valueReference": {"reference": second}}]]
        ),
    )
    assert first != second


def test_a_gap_appears_after_a_transaction_and_reopens_after_a_delete(http: httpx.Client) -> None:
    patient, _ = _member(http)
    post = {"method": "POST", "url": "Encounter"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _discharge(patient, days_ago=9), "request": post}],
    }
    assert http.post("", json=bundle).status_code == 200
    _wait_for(
        http,
        patient,
        lambda found: [_status(i) for i in _by_rule(found, "transition-follow-up")] == ["open-gap"],
    )
    contact = _post(http, _contact(patient))
    _wait_for(
        http,
        patient,
        lambda found: (
            [_status(i) for i in _by_rule(found, "transition-follow-up")] == ["closed-gap"]
        ),
    )
    assert http.delete(contact).status_code in (200, 204)
    issues = _wait_for(
        http,
        patient,
        lambda found: [_status(i) for i in _by_rule(found, "transition-follow-up")] == ["open-gap"],
    )
    # Reopened: the same DetectedIssue, its mitigation gone.
    assert len(issues) == 1
    assert "mitigation" not in issues[0]
    assert issues[0]["meta"]["versionId"] == "3"


def test_a_care_managers_acknowledgement_keeps_a_gap_closed(http: httpx.Client) -> None:
    patient, _ = _member(http, manager=None)
    issues = _wait_for(http, patient, lambda found: bool(_by_rule(found, "no-care-manager")))
    [issue] = _by_rule(issues, "no-care-manager")
    assert _status(issue) == "open-gap"
    acknowledged = dict(
        issue,
        mitigation=[{"action": {"text": "Assignment pending at the plan"}, "date": "2026-11-30"}],
    )
    assert http.put(f"DetectedIssue/{issue['id']}", json=acknowledged).status_code == 200
    issues = _wait_for(
        http,
        patient,
        lambda found: [_status(i) for i in _by_rule(found, "no-care-manager")] == ["closed-gap"],
    )
    # Another change to the member: the rule still finds the gap, the acknowledgement holds.
    _post(
        http,
        {"resourceType": "Communication", "status": "completed", "subject": {"reference": patient}},
    )
    time.sleep(1.0)
    [still] = _by_rule(_issues(http, patient), "no-care-manager")
    assert _status(still) == "closed-gap"
    assert still["mitigation"][0]["action"]["text"] == "Assignment pending at the plan"


def test_replaying_the_outbox_changes_nothing(http: httpx.Client, gap_settings: Settings) -> None:
    url = gap_settings.database_url or ""
    patient, _ = _member(http)
    _post(http, _discharge(patient, days_ago=3))
    _wait_for(http, patient, lambda found: bool(_by_rule(found, "transition-follow-up")))
    _settled(url)
    before = _sql(
        url, "SELECT id, version FROM resource WHERE resource_type = 'DetectedIssue' ORDER BY id"
    )
    _sql(url, "UPDATE consumer SET xid = 0, seq = 0 WHERE name = 'gaps'")
    _sql(url, "SELECT pg_notify('cmfhir_event', '')")
    _settled(url)
    after = _sql(
        url, "SELECT id, version FROM resource WHERE resource_type = 'DetectedIssue' ORDER BY id"
    )
    assert [tuple(r) for r in after] == [tuple(r) for r in before]


def test_two_servers_make_no_duplicate(
    http: httpx.Client, gap_settings: Settings, gap_base: str
) -> None:
    url = gap_settings.database_url or ""
    with (
        RunningServer(gap_settings) as second,
        httpx.Client(base_url=second.base, timeout=60) as other,
    ):
        patients = []
        for n in range(12):
            client = http if n % 2 else other
            patient, _ = _member(client)
            _post(client, _discharge(patient, days_ago=8))
            _post(other if n % 2 else http, _discharge(patient, days_ago=1))
            patients.append(patient)
        for patient in patients:
            _wait_for(
                http, patient, lambda found: len(_by_rule(found, "transition-follow-up")) == 2
            )
        _settled(url)
    duplicates = _sql(
        url,
        "SELECT content->'identifier'->0->>'value' AS v, count(*) FROM resource "
        "WHERE resource_type = 'DetectedIssue' GROUP BY 1 HAVING count(*) > 1",
    )
    assert duplicates == []


def test_a_sweep_as_of_a_later_day_opens_a_prospective_gap(
    http: httpx.Client, gap_settings: Settings, tmp_path: Path
) -> None:
    patient, _ = _member(http)
    _post(http, _discharge(patient, days_ago=1))
    _wait_for(
        http,
        patient,
        lambda found: (
            [_status(i) for i in _by_rule(found, "transition-follow-up")] == ["prospective-gap"]
        ),
    )
    later = _iso(datetime.now(UTC) + timedelta(days=10))
    done = run_cmfhir(
        gap_settings.database_url,
        tmp_path,
        "gaps",
        "sweep",
        "--as-of",
        later,
        CMFHIR_GAP_RULES="sample_rules",
        PYTHONPATH=str(Path(__file__).parent),
    )
    assert done.returncode == 0, done.stderr
    assert "members queued" in done.stdout
    [issue] = _by_rule(_issues(http, patient), "transition-follow-up")
    assert _status(issue) == "open-gap"


def test_sweep_refuses_a_bad_date(gap_settings: Settings, tmp_path: Path) -> None:
    done = run_cmfhir(gap_settings.database_url, tmp_path, "gaps", "sweep", "--as-of", "soon")
    assert done.returncode == 2
    assert "'soon' is not a date or instant" in done.stderr


def test_measures_validate(http: httpx.Client) -> None:
    from cmfhir.config import default_profiles_dir
    from cmfhir.gaps.care_gaps import load_measures
    from cmfhir.resources.version_validation import validate_for_version

    measures = load_measures(default_profiles_dir())
    assert len(measures) == 11
    for measure in measures:
        validate_for_version(measure, "4.0", expected_type="Measure")
