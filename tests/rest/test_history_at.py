"""`_history?_at=T` (https://hl7.org/fhir/R4B/http.html#history): per resource, the version
that was current at T — at instance, type and system level — and, for a coarser T, each
version current at some point of that period. On a database of its own, so the system
history holds only what this test wrote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings
from conftest import _new_database

FHIR = {"Content-Type": "application/fhir+json"}
MS = timedelta(milliseconds=1)
Version = tuple[str, str, int]  # type, id, version


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def server(start_server: type, admin_url: str) -> Iterator[str]:
    with _new_database(admin_url) as url, start_server(Settings(database_url=url)) as running:
        yield running.base


def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def _history(http: httpx.Client, path: str, params: dict[str, str]) -> set[Version]:
    found: set[Version] = set()
    bundle = _ok(http.get(path, params={**params, "_count": "1000"}))
    assert "next" not in {lk["relation"] for lk in bundle["link"]}
    for entry in bundle.get("entry", []):
        type_, id = entry["fullUrl"].rsplit("/", 2)[-2:]
        found.add((type_, id, int(entry["response"]["etag"][3:-1])))
    return found


@pytest.fixture(scope="module")
def stamps(server: str) -> dict[Version, datetime]:
    """Each version written, with its stamp: Patient x (4 versions, the last a delete),
    Patient y, and an Observation about y changed after x was deleted."""
    with httpx.Client(base_url=server, timeout=60) as http:

        def pause() -> None:
            time.sleep(0.01)  # stamps a few milliseconds apart

        x = {"resourceType": "Patient", "id": "x", "gender": "female"}
        _ok(http.put("Patient/x", json=x, headers=FHIR))
        pause()
        _ok(http.put("Patient/x", json={**x, "gender": "male"}, headers=FHIR))
        pause()
        y = {"resourceType": "Patient", "id": "y"}
        _ok(http.put("Patient/y", json=y, headers=FHIR))
        pause()
        _ok(http.put("Patient/x", json={**x, "gender": "other"}, headers=FHIR))
        pause()
        obs = {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": "Patient/y"},
        }
        _ok(http.put("Observation/o", json=obs, headers=FHIR))
        pause()
        assert http.delete("Patient/x").status_code in (200, 204)
        pause()
        _ok(http.put("Observation/o", json={**obs, "status": "amended"}, headers=FHIR))
        # History stops at the oldest write still running (docs/history.md): the background
        # workers' reaction to these writes may hold the newest back for a moment.
        deadline = time.monotonic() + 30
        while True:
            bundle = _ok(http.get("_history", params={"_count": "1000"}))
            written = [
                e
                for e in bundle.get("entry", [])
                if e["fullUrl"].rsplit("/", 2)[-2:] == ["Observation", "o"]
            ]
            if len(written) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return {
        (*e["fullUrl"].rsplit("/", 2)[-2:], int(e["response"]["etag"][3:-1])): _parse(
            e["response"]["lastModified"]
        )
        for e in bundle["entry"]
    }


def _current(stamps: dict[Version, datetime], low: datetime, high: datetime) -> set[Version]:
    """The versions current at some point of [low, high): stamped before `high`, and the
    next version (if any) stamped after `low`."""
    out = set()
    for (type_, id, version), stamp in stamps.items():
        following = stamps.get((type_, id, version + 1))
        if stamp < high and (following is None or following > low):
            out.add((type_, id, version))
    return out


def _probes(stamps: dict[Version, datetime]) -> list[datetime]:
    moments = sorted(set(stamps.values()))
    return [moments[0] - MS, *moments, *(m + MS for m in moments), moments[-1] + 1000 * MS]


def test_at_gives_each_resource_its_version_current_then(
    server: str, stamps: dict[Version, datetime]
) -> None:
    # The system history also holds what the server stored at start (profiles/content).
    mine = {v: t for v, t in stamps.items() if v[0] in ("Patient", "Observation")}
    assert len(mine) == 7
    assert len(set(mine.values())) == 7, "the stamps must differ for this test to mean much"
    with httpx.Client(base_url=server, timeout=60) as http:
        for moment in _probes(stamps):
            at = {"_at": _instant(moment)}
            expected = _current(stamps, moment, moment + MS)
            assert _history(http, "_history", at) == expected, at
            assert _history(http, "Patient/_history", at) == {
                v for v in expected if v[0] == "Patient"
            }, at
            assert _history(http, "Patient/x/_history", at) == {
                v for v in expected if v[:2] == ("Patient", "x")
            }, at


def test_at_one_version_per_resource(server: str, stamps: dict[Version, datetime]) -> None:
    moment = stamps[("Patient", "x", 3)]  # x at its third version, y and o exist
    with httpx.Client(base_url=server, timeout=60) as http:
        found = _history(http, "_history", {"_at": _instant(moment)})
    mine = {v for v in found if v[0] in ("Patient", "Observation")}
    assert mine == {("Patient", "x", 3), ("Patient", "y", 1)}


def test_at_a_coarser_time_gives_every_version_current_during_it(
    server: str, stamps: dict[Version, datetime]
) -> None:
    first = min(stamps.values())
    day = first.date().isoformat()
    low = datetime.fromisoformat(day).replace(tzinfo=first.tzinfo)
    with httpx.Client(base_url=server, timeout=60) as http:
        found = _history(http, "_history", {"_at": day})
    assert found == _current(stamps, low, low + timedelta(days=1))


def test_at_and_since_are_checked(server: str) -> None:
    with httpx.Client(base_url=server, timeout=60) as http:
        response = http.get("_history", params={"_at": "yesterday"})
    assert response.status_code == 400
    assert "_at" in response.text
