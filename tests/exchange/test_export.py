"""Bulk Data `$export`: kick-off, polling, manifest and files compared with the database,
at Group and Patient level, with _since (and deletions), _typeFilter and cancellation;
a job survives the death of the worker that claimed it."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.config import Settings
from cmfhir.exchange.export.kickoff import export_root
from cmfhir.exchange.export.worker import ExportWorker
from cmfhir.store.export_jobs import ExportJobs

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _create(client: httpx.Client, resource: dict[str, Any]) -> str:
    response = client.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _observation(patient: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "urn:test", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def _kickoff(client: httpx.Client, url: str, **kwargs: Any) -> str:
    response = client.request(kwargs.pop("method", "GET"), url, headers=ASYNC, **kwargs)
    assert response.status_code == 202, response.text
    return response.headers["Content-Location"]


def _wait(client: httpx.Client, status_url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url)
        if response.status_code == 200:
            manifest: dict[str, Any] = response.json()
            assert response.headers["content-type"].startswith("application/json")
            assert "Expires" in response.headers
            return manifest
        assert response.status_code == 202, response.text
        assert response.headers["Retry-After"]
        assert len(response.headers["X-Progress"]) < 100
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.3)


def _files(
    client: httpx.Client, manifest: dict[str, Any], key: str = "output"
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in manifest[key]:
        response = client.get(item["url"])
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        assert len(lines) == item["count"]
        out.setdefault(item["type"], []).extend(lines)
    return out


@pytest.fixture(scope="module")
def panel(client: httpx.Client) -> dict[str, Any]:
    code = uuid.uuid4().hex
    a = _create(client, {"resourceType": "Patient", "name": [{"family": "Alpha"}]})
    b = _create(client, {"resourceType": "Patient", "name": [{"family": "Beta"}]})
    c = _create(client, {"resourceType": "Patient", "name": [{"family": "Gamma"}]})
    obs = {p: [_create(client, _observation(p, code)) for _ in range(2)] for p in (a, b, c)}
    other = _create(client, _observation(a, code + "x"))
    group = _create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [
                {"entity": {"reference": f"Patient/{a}"}},
                {"entity": {"reference": f"Patient/{b}"}},
            ],
        },
    )
    return {"a": a, "b": b, "c": c, "obs": obs, "other": other, "group": group, "code": code}


def _ids(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


def test_group_export_matches_the_database(client: httpx.Client, panel: dict[str, Any]) -> None:
    status_url = _kickoff(client, f"Group/{panel['group']}/$export?_type=Patient,Observation")
    manifest = _wait(client, status_url)
    assert manifest["request"].endswith(f"Group/{panel['group']}/$export?_type=Patient,Observation")
    assert manifest["requiresAccessToken"] is False  # the test server runs without auth
    assert manifest["error"] == []
    files = _files(client, manifest)
    assert _ids(files["Patient"]) == {panel["a"], panel["b"]}
    expected = {*panel["obs"][panel["a"]], *panel["obs"][panel["b"]], panel["other"]}
    assert _ids(files["Observation"]) == expected
    for resource in files["Observation"]:
        stored = client.get(f"Observation/{resource['id']}").json()
        assert resource == stored


def test_type_filter_export(client: httpx.Client, panel: dict[str, Any]) -> None:
    status_url = _kickoff(
        client,
        f"Group/{panel['group']}/$export",
        params={
            "_type": "Observation",
            "_typeFilter": f"Observation?code=urn:test|{panel['code']}",
        },
    )
    files = _files(client, _wait(client, status_url))
    assert _ids(files["Observation"]) == {*panel["obs"][panel["a"]], *panel["obs"][panel["b"]]}
    assert set(files) == {"Observation"}


def test_since_export_lists_changes_and_deletions(
    client: httpx.Client, panel: dict[str, Any]
) -> None:
    first = _wait(client, _kickoff(client, f"Group/{panel['group']}/$export?_type=Observation"))
    since = first["transactionTime"]
    changed = _create(client, _observation(panel["b"], panel["code"]))
    gone = _create(client, _observation(panel["a"], panel["code"]))
    assert client.delete(f"Observation/{gone}").status_code in (200, 204)
    second = _wait(
        client,
        _kickoff(
            client,
            f"Group/{panel['group']}/$export",
            params={"_type": "Observation", "_since": since},
        ),
    )
    files = _files(client, second)
    assert _ids(files["Observation"]) == {changed}
    deleted = _files(client, second, "deleted")["Bundle"]
    urls = [e["request"] for b in deleted for e in b["entry"]]
    assert {"method": "DELETE", "url": f"Observation/{gone}"} in urls
    assert second["transactionTime"] >= since


def test_patient_export_with_patient_parameter(client: httpx.Client, panel: dict[str, Any]) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Patient,Observation"},
            {"name": "patient", "valueReference": {"reference": f"Patient/{panel['c']}"}},
        ],
    }
    status_url = _kickoff(client, "Patient/$export", method="POST", json=body)
    files = _files(client, _wait(client, status_url))
    assert _ids(files["Patient"]) == {panel["c"]}
    assert _ids(files["Observation"]) == set(panel["obs"][panel["c"]])


def test_cancel(client: httpx.Client, panel: dict[str, Any]) -> None:
    status_url = _kickoff(client, "$export?_type=Observation")
    response = client.delete(status_url)
    assert response.status_code == 202
    assert client.get(status_url).status_code == 404
    assert client.delete(status_url).status_code == 404


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("$export", {}, 400),  # no Prefer: respond-async
        ("$export?_type=Nonsense", ASYNC, 400),
        ("$export?_outputFormat=text/csv", ASYNC, 400),
        ("$export?_typeFilter=Observation?_sort=date", ASYNC, 400),
        ("$export?_typeFilter=Observation?nonsense=1", ASYNC, 400),
        ("$export?patient=Patient/1", ASYNC, 400),
        ("Group/does-not-exist/$export", ASYNC, 404),
        ("Observation/$export", ASYNC, 400),
        ("$export-status/" + "0" * 32, {}, 404),
        ("$export-file/" + "0" * 32 + "/Patient.ndjson", {}, 404),
        ("$export-file/..%2F..%2Fetc/passwd", {}, 404),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "",
)
def test_refusals(client: httpx.Client, url: str, headers: dict[str, str], status: int) -> None:
    response = client.get(url, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_a_job_survives_its_worker(
    settings: Settings, client: httpx.Client, panel: dict[str, Any]
) -> None:
    """A job left in progress by a worker that died (its lease ran out) is claimed again
    and completed: exports survive a restart."""
    job_id = uuid.uuid4().hex
    base = str(client.base_url).rstrip("/")
    async with open_context(settings) as ctx:
        jobs = ExportJobs(ctx.store.engine)
        params = {"level": "group", "group": panel["group"], "types": ["Patient"]}
        await jobs.create(
            job_id, f"{base}/Group/{panel['group']}/$export", params, {"kind": "open"}
        )
        async with ctx.store.engine.begin() as conn:
            # As a worker that claimed it and died leaves it.
            await conn.execute(
                text(
                    "UPDATE export_job SET status = 'in-progress', attempts = 1,"
                    " started_at = now(), lease_until = now() - interval '1 second'"
                    " WHERE id = :id"
                ),
                {"id": job_id},
            )
        worker = ExportWorker(ctx, export_root(), expiry_s=60)
        await worker.run_once()  # this one or the server's own worker takes it again
        files = _files(client, _wait(client, f"{base}/$export-status/{job_id}"))
        assert _ids(files["Patient"]) == {panel["a"], panel["b"]}
        job = await jobs.get(job_id)
        assert job is not None
        assert job.attempts == 2
