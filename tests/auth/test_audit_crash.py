"""What a crash of the server costs the audit trail (docs/security.md, Audit): `kill -9`
right after a write's response loses neither the write's AuditEvent nor its X-Provenance
(they committed with the write), while a read's AuditEvent, still in the buffer, is lost
(the documented window: the reads of the last CMFHIR_AUDIT_INTERVAL_S seconds)."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx

from serving import serve

FHIR = {"Content-Type": "application/fhir+json"}
# Audit on, and a buffer that is never written before the kill: whatever survives it was
# written with the request, not by the buffer.
ENV = {"CMFHIR_AUDIT": "true", "CMFHIR_AUDIT_INTERVAL_S": "3600"}


def _events(http: httpx.Client, rid: str) -> list[dict[str, Any]]:
    answer = http.get("AuditEvent", params={"site": rid})
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_kill_9_after_a_write_keeps_its_audit_event(scratch_database: str, tmp_path: Path) -> None:
    write_id, read_id = uuid.uuid4().hex, uuid.uuid4().hex
    provenance = {
        "resourceType": "Provenance",
        "recorded": "2026-11-30T12:00:00Z",
        "agent": [{"who": {"display": "intake clerk"}}],
    }
    with serve(scratch_database, tmp_path, env=ENV) as served:
        with httpx.Client(base_url=served.base, timeout=30) as http:
            created = http.post(
                "Patient",
                json={"resourceType": "Patient"},
                headers={
                    **FHIR,
                    "X-Request-Id": write_id,
                    "X-Provenance": json.dumps(provenance),
                },
            )
            assert created.status_code == 201, created.text
            member = created.json()["id"]
            read = http.get(f"Patient/{member}", headers={"X-Request-Id": read_id})
            assert read.status_code == 200
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(10)
    with (
        serve(scratch_database, tmp_path, env=ENV) as again,
        httpx.Client(base_url=again.base, timeout=30) as http,
    ):
        (event,) = _events(http, write_id)
        assert event["action"] == "C"
        assert {"what": {"reference": f"Patient/{member}/_history/1"}} in event["entity"]
        found = http.get("Provenance", params={"target": f"Patient/{member}"}).json()
        (stored,) = [e["resource"] for e in found.get("entry", [])]
        assert stored["target"] == [{"reference": f"Patient/{member}/_history/1"}]
        # The read was only in the buffer: lost with the process, as documented.
        assert _events(http, read_id) == []
