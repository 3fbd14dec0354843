"""An export is one consistent snapshot: writes committed while it runs (here between two
of its files) are not in it, and a following `_since=transactionTime` export has each of
them exactly once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from cmfhir.app import open_context
from cmfhir.auth.principal import OPEN
from cmfhir.config import Settings
from cmfhir.exchange.export.job import run_export
from cmfhir.store.export_jobs import ExportJob, ExportJobs

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def _create(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.post(resource["resourceType"], json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{patient}"},
    }


class WritesBetweenFiles(ExportJobs):
    """Job rows as the worker sees them, with other clients' writes committed when the
    export moves from its first file (Observation) to its second (Patient)."""

    def __init__(self, jobs: ExportJobs, write: Any) -> None:
        super().__init__(jobs.engine)
        self.write = write
        self.beats = 0

    async def heartbeat(self, id: str, progress: str, lease_s: int) -> str | None:
        self.beats += 1
        if self.beats == 2:
            self.write()
        return "in-progress"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _wait(client: httpx.Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (answer := client.get(status_url)).status_code == 202:
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    manifest: dict[str, Any] = answer.json()
    return manifest


async def _export(
    settings: Settings, job: ExportJob, root: Path, write: Any
) -> tuple[dict[str, Any], int]:
    """Run the export as a worker does, with `write` called between its two files."""
    async with open_context(settings) as ctx:
        jobs = WritesBetweenFiles(ExportJobs(ctx.store.engine), write)
        manifest, _ = await run_export(replace(ctx, principal=OPEN), jobs, job, root, lease_s=60)
    return manifest, jobs.beats


def test_writes_during_an_export_are_in_the_next_since_export_once(
    settings: Settings, client: httpx.Client, tmp_path: Path
) -> None:
    a = _create(client, {"resourceType": "Patient", "active": True})["id"]
    b = _create(client, {"resourceType": "Patient", "active": True})["id"]
    kept = _create(client, _observation(b))["id"]
    doomed = _create(client, _observation(b))["id"]
    group = _create(
        client,
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in (a, b)],
        },
    )["id"]
    written: dict[str, str] = {}

    def write() -> None:
        # Committed (each its own transaction) after the Observations were exported and
        # before the Patients are: a new Observation, a Patient changed, an Observation
        # deleted.
        written["obs"] = _create(client, _observation(a))["id"]
        changed = client.put(f"Patient/{a}", json={"resourceType": "Patient", "id": a})
        assert changed.status_code == 200, changed.text
        assert client.delete(f"Observation/{doomed}").status_code in (200, 204)

    job = ExportJob(
        id=uuid.uuid4().hex,
        status="in-progress",
        request="test",
        params={"level": "group", "group": group, "types": ["Observation", "Patient"]},
        principal={"kind": "open"},
        progress=None,
        manifest=None,
        error=None,
        expires_at=None,
        attempts=1,
    )
    manifest, beats = asyncio.run(_export(settings, job, tmp_path, write))
    assert beats == 2 and written, "the writes did not happen during the export"
    files = {item["type"]: tmp_path / job.id / item["name"] for item in manifest["output"]}
    # The snapshot: the state before the writes, although the Patients were read after them.
    assert {o["id"] for o in _lines(files["Observation"])} == {kept, doomed}
    patients = {p["id"]: p for p in _lines(files["Patient"])}
    assert set(patients) == {a, b}
    assert patients[a]["meta"]["versionId"] == "1" and patients[a]["active"] is True

    since = manifest["transactionTime"]
    status_url = client.get(
        f"Group/{group}/$export",
        params={"_type": "Observation,Patient", "_since": since},
        headers=ASYNC,
    ).headers["Content-Location"]
    following = _wait(client, status_url)
    assert following["transactionTime"] >= since
    out: dict[str, list[dict[str, Any]]] = {}
    for item in following["output"]:
        out[item["type"]] = [json.loads(x) for x in client.get(item["url"]).text.splitlines()]
    new_obs = [o["id"] for o in out["Observation"] if o["id"] == written["obs"]]
    assert new_obs == [written["obs"]]  # exactly once
    assert [p["meta"]["versionId"] for p in out["Patient"] if p["id"] == a] == ["2"]
    deleted = [
        e["request"]["url"]
        for item in following["deleted"]
        for bundle in client.get(item["url"]).text.splitlines()
        for e in json.loads(bundle)["entry"]
    ]
    assert deleted == [f"Observation/{doomed}"]
