"""How many times a transaction's writes go to the database: once, when no conditional entry
could see another entry's write (a member's Bundle of POSTs linked by `urn:uuid:`); before a
conditional search only when a write it could see is still pending
(https://hl7.org/fhir/R4B/http.html#trules)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from cmfhir.store import NewVersion, Repository

FHIR = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test:flushes"


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The types of each group of versions the server's transactions write (the server runs
    in this process)."""
    seen: list[list[str]] = []
    original = Repository.write

    async def counted(self: Repository, versions: Sequence[NewVersion]) -> None:
        seen.append(sorted(v.resource_type for v in versions))
        await original(self, versions)

    monkeypatch.setattr(Repository, "write", counted)
    yield seen


def _post(resource: dict[str, Any], urn: str | None = None, **request: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if urn:
        entry["fullUrl"] = urn
    return entry


def _member(mrn: str) -> tuple[str, list[dict[str, Any]]]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    encounter = f"urn:uuid:{uuid.uuid4()}"
    entries = [
        _post(
            {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": mrn}]},
            patient,
        ),
        _post(
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": patient},
            },
            encounter,
        ),
        _post(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": patient},
                "encounter": {"reference": encounter},
            }
        ),
    ]
    return patient, entries


def _send(client: httpx.Client, entries: list[dict[str, Any]]) -> httpx.Response:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return client.post("", json=bundle, headers=FHIR)


def test_a_bundle_of_plain_creates_is_written_at_once(
    client: httpx.Client, writes: list[list[str]]
) -> None:
    _, entries = _member(str(uuid.uuid4()))
    response = _send(client, entries)
    assert response.status_code == 200, response.text
    assert writes == [["Encounter", "Observation", "Patient"]]


def test_a_conditional_create_of_another_type_does_not_split_the_writes(
    client: httpx.Client, writes: list[list[str]]
) -> None:
    _, entries = _member(str(uuid.uuid4()))
    practitioner = {"resourceType": "Practitioner", "identifier": [{"system": SYSTEM}]}
    practitioner["identifier"][0]["value"] = str(uuid.uuid4())
    query = f"identifier={SYSTEM}|{practitioner['identifier'][0]['value']}"
    entries.append(_post(practitioner, ifNoneExist=query))
    response = _send(client, entries)
    assert response.status_code == 200, response.text
    assert writes == [["Encounter", "Observation", "Patient", "Practitioner"]]


def test_a_conditional_create_that_could_see_a_pending_write_flushes_it_first(
    client: httpx.Client, writes: list[list[str]]
) -> None:
    mrn = str(uuid.uuid4())
    _, entries = _member(mrn)
    # The same Patient again, conditionally, right after the first: it must find the one the
    # first entry creates, so that one is written before the search; the rest after it.
    again = {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": mrn}]}
    entries.insert(1, _post(again, ifNoneExist=f"identifier={SYSTEM}|{mrn}"))
    response = _send(client, entries)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[:2] == ["201 Created", "200 OK"], statuses
    assert writes == [["Patient"], ["Encounter", "Observation"]]
