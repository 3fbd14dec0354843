"""`cmfhir serve --no-workers` finds no gaps by itself; `cmfhir worker` beside it does, and
stops cleanly on SIGTERM. Rules: tests/gaps/sample_rules.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from serving import STOP_TIMEOUT, cmfhir_env, private_dir, serve

RULES = {"CMFHIR_GAP_RULES": "sample_rules", "PYTHONPATH": str(Path(__file__).parent)}


def _gaps(base: str, patient: str) -> list[dict[str, object]]:
    found = httpx.get(f"{base}/DetectedIssue", params={"patient": patient}, timeout=30).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_serve_without_workers_and_a_worker_apart(scratch_database: str) -> None:
    with (
        private_dir() as workdir,
        serve(scratch_database, workdir, "--no-workers", env=RULES) as served,
    ):
        base = served.base
        patient = httpx.post(f"{base}/Patient", json={"resourceType": "Patient"}).json()["id"]
        episode = {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "patient": {"reference": f"Patient/{patient}"},
        }
        assert httpx.post(f"{base}/EpisodeOfCare", json=episode).status_code == 201
        time.sleep(2.0)
        assert _gaps(base, f"Patient/{patient}") == []  # no worker runs
        log = workdir / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "cmfhir", "worker"],
                env={**cmfhir_env(scratch_database, workdir), **RULES},
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while not _gaps(base, f"Patient/{patient}"):
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(STOP_TIMEOUT)
        assert code == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        [gap] = _gaps(base, f"Patient/{patient}")
        assert gap["code"]["coding"][1]["code"] == "no-care-manager"  # type: ignore[index]
