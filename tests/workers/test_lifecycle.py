"""Stopping the background workers: `cmfhir serve` with every worker busy (the gap engine
evaluating members, an export running, the subscription sender waiting on an endpoint that
does not answer) stops them at SIGTERM well within the shutdown grace, and says which
stopped (docs/architecture.md, "Workers")."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from tests.serving import serve
from tests.subscriptions.conftest import subscription
from tests.subscriptions.receiver import Receiver

FHIR = {"Content-Type": "application/fhir+json"}
# What `cmfhir serve` runs by default (workers/standard.py).
WORKERS = {
    "outbox-listener",
    "outbox:gaps",
    "gaps:evaluate-0",
    "gaps-sweep",
    "outbox-pruner",
    "outbox:subscriptions",
    "subscriptions:sender",
    "subscriptions:pruner",
}


def _members(count: int) -> dict[str, Any]:
    """A transaction of members, each with an inpatient stay (work for the gap engine)."""
    entries: list[dict[str, Any]] = []
    for n in range(count):
        entries.append(
            {
                "fullUrl": f"urn:uuid:00000000-0000-0000-0000-{n:012d}",
                "resource": {"resourceType": "Patient", "name": [{"family": f"Stop{n}"}]},
                "request": {"method": "POST", "url": "Patient"},
            }
        )
        entries.append(
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "IMP",
                    },
                    "subject": {"reference": f"urn:uuid:00000000-0000-0000-0000-{n:012d}"},
                    "period": {"start": "2026-01-01", "end": "2026-01-03"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _wait(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigterm_stops_every_busy_worker_within_the_grace(
    scratch_database: str, tmp_path: Path
) -> None:
    endpoint = Receiver().start()
    endpoint.hold()  # the sender's POST stays unanswered: it is mid-send at SIGTERM
    try:
        with (
            serve(
                scratch_database, tmp_path, env={"CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK": "true"}
            ) as served,
            httpx.Client(base_url=served.base, timeout=60) as http,
        ):
            made = http.post(
                "Subscription",
                json=subscription("encounter-admission-discharge", endpoint.url),
                headers=FHIR,
            )
            assert made.status_code == 201, made.text
            written = http.post("", json=_members(40), headers=FHIR)
            assert written.status_code == 200, written.text
            kickoff = http.get(
                "$export", headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}
            )
            assert kickoff.status_code == 202, kickoff.text
            _wait(lambda: endpoint.arrivals > 0, "the handshake to reach the endpoint")

            code, _ = served.stop(signal.SIGTERM)  # None when still running after 30 s
            output = served.output()
    finally:
        endpoint.stop()

    assert code == 0, output
    stopped = re.search(r"workers stopped in [\d.]+ s: (.*)", output)
    assert stopped is not None, output
    names = {name.removesuffix(" (cancelled)") for name in stopped.group(1).split(", ")}
    assert names >= WORKERS, output
    # None was still running when the server's grace ran out.
    assert "did not stop within" not in output, output
