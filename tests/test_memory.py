"""Peak memory of `cmfhir serve` (VmHWM of its process) under the requests that once took
it past 17 GiB: a 60 MB Bundle and a batch of 200 searches of 1000 resources each. The
figures are recorded in docs/configuration.md (Limits, Memory)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import _new_database
from serving import Served, serve

GIB = 1024**3
MB = 1_000_000
FHIR = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


def peak_rss(served: Served) -> int:
    """The process's resident-set high-water mark, in bytes."""
    status = Path(f"/proc/{served.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _bundle(kind: str, entries: list[bytes]) -> bytes:
    head = b'{"resourceType":"Bundle","type":"' + kind.encode() + b'","entry":['
    return head + b",".join(entries) + b"]}"


def _observation(i: int) -> str:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "x" * 500},
        "subject": {"reference": f"Patient/p{i}"},
        "valueQuantity": {"value": i, "unit": "/min"},
    }
    return json.dumps({"request": {"method": "POST", "url": "Observation"}, "resource": resource})


def _patient(i: int, text: int) -> bytes:
    resource = {"resourceType": "Patient", "name": [{"family": f"Mem{i}", "text": "t" * text}]}
    entry = {"request": {"method": "POST", "url": "Patient"}, "resource": resource}
    return json.dumps(entry).encode()


@pytest.fixture(scope="module")
def served(admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server of its own on a database of its own: what is loaded here stays here."""
    with (
        _new_database(admin_url) as url,
        serve(url, tmp_path_factory.mktemp("memory")) as running,
    ):
        yield running


def test_60_mb_bundle_past_the_entry_limit(served: Served) -> None:
    print(f"\nafter start-up: peak RSS {peak_rss(served) / 2**20:.0f} MiB")
    body = _bundle("transaction", [_observation(i).encode() for i in range(80_000)])
    assert len(body) > 60 * MB
    response = httpx.post(served.base, content=body, headers=FHIR, timeout=300)
    assert response.status_code == 413, response.text[:300]
    print(f"\n60 MB Bundle of {80_000} entries: peak RSS {peak_rss(served) / 2**20:.0f} MiB")
    assert peak_rss(served) < GIB


def test_60_mb_transaction_within_the_limits(served: Served) -> None:
    body = _bundle("transaction", [_patient(i, 30_000) for i in range(2_000)])
    assert len(body) > 60 * MB
    response = httpx.post(served.base, content=body, headers=FHIR, timeout=600)
    assert response.status_code == 200, response.text[:300]
    print(f"\n60 MB transaction of 2000 entries: peak RSS {peak_rss(served) / 2**20:.0f} MiB")
    assert peak_rss(served) < GIB


def test_batch_of_200_searches_of_1000(served: Served) -> None:
    seed = _bundle("transaction", [_patient(i, 1_000) for i in range(1_200)])
    assert httpx.post(served.base, content=seed, headers=FHIR, timeout=300).status_code == 200
    search = b'{"request":{"method":"GET","url":"Patient?_count=1000"}}'
    response = httpx.post(served.base, content=_bundle("batch", [search] * 200), timeout=300)
    assert response.status_code == 200, response.text[:300]
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    # The default budget (10,000 resources, 128 MiB): the pages that fit, then too-costly
    # (here the 30 KB Patients of the test above fill 128 MiB first).
    answered = statuses.count("200")
    assert 1 <= answered <= 10
    assert statuses == ["200"] * answered + ["413"] * (200 - answered)
    assert len(response.content) < 130 * 2**20
    print(f"\nbatch of 200 searches of 1000: peak RSS {peak_rss(served) / 2**20:.0f} MiB")
    assert peak_rss(served) < GIB
