"""Referential integrity as HAPI FHIR enforces it by default: a reference to a resource on
this server that does not exist (or is deleted) is refused on write with 400, and deleting
a resource that current resources still refer to answers 409 naming them. Both can be
turned off (CMFHIR_ENFORCE_REFERENTIAL_INTEGRITY_ON_WRITE / _ON_DELETE)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings

FHIR = {"Content-Type": "application/fhir+json"}


def _create(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post(body["resourceType"], json=body, headers=FHIR)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _observation(subject: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": subject},
        **more,
    }


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _delete(url: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url}}


def _tagged(tag: str, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "meta": {"tag": [{"system": "urn:test:ri", "code": tag}]}}


def _count(client: httpx.Client, resource_type: str, tag: str) -> int:
    found = client.get(resource_type, params={"_tag": f"urn:test:ri|{tag}", "_summary": "count"})
    return int(found.json()["total"])


# -- on write -------------------------------------------------------------------------------


def test_reference_to_a_missing_resource_is_refused(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    missing = f"Patient/missing-{tag[:8]}"
    response = client.post("Observation", json=_tagged(tag, _observation(missing)), headers=FHIR)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-found"
    assert missing in issue["diagnostics"]
    assert issue["expression"] == ["Observation.subject"]
    assert _count(client, "Observation", tag) == 0


def test_the_outcome_says_which_repetition(client: httpx.Client) -> None:
    patient = _create(client, {"resourceType": "Patient"})
    doctor = _create(client, {"resourceType": "Practitioner"})
    body = _observation(
        f"Patient/{patient}",
        performer=[{"reference": f"Practitioner/{doctor}"}, {"reference": "Practitioner/nobody"}],
    )
    response = client.post("Observation", json=body, headers=FHIR)
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert [i["expression"] for i in issues] == [["Observation.performer[1]"]]
    assert "Practitioner/nobody" in issues[0]["diagnostics"]


def test_reference_to_a_deleted_resource_is_refused(client: httpx.Client) -> None:
    patient = _create(client, {"resourceType": "Patient"})
    assert client.delete(f"Patient/{patient}").status_code in (200, 204)
    response = client.post("Observation", json=_observation(f"Patient/{patient}"), headers=FHIR)
    assert response.status_code == 400
    assert f"Patient/{patient}" in response.text


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param("{patient}", id="relative"),
        pytest.param("{patient}/_history/1", id="version-specific"),
        pytest.param("http://elsewhere.example/fhir/Patient/unknown", id="another-server"),
        pytest.param("urn:uuid:8e4d58a2-7b0a-4a8c-9c41-111111111111", id="urn-outside-bundle"),
    ],
)
def test_references_that_are_accepted(client: httpx.Client, reference: str) -> None:
    patient = "Patient/" + _create(client, {"resourceType": "Patient"})
    body = _observation(reference.format(patient=patient))
    assert client.post("Observation", json=body, headers=FHIR).status_code == 201


def test_contained_reference_is_not_looked_up(client: httpx.Client) -> None:
    patient = _create(client, {"resourceType": "Patient"})
    body = _observation(
        f"Patient/{patient}",
        contained=[{"resourceType": "Practitioner", "id": "c1"}],
        performer=[{"reference": "#c1"}],
    )
    assert client.post("Observation", json=body, headers=FHIR).status_code == 201


def test_version_specific_reference_to_a_missing_resource_is_refused(
    client: httpx.Client,
) -> None:
    body = _observation("Patient/never-there/_history/1")
    response = client.post("Observation", json=body, headers=FHIR)
    assert response.status_code == 400
    assert "Patient/never-there/_history/1" in response.text


def test_transaction_may_refer_to_what_it_creates(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    member = f"urn:uuid:{uuid.uuid4()}"
    bundle = _transaction(
        _post(_observation(member), None),
        _post(_tagged(tag, {"resourceType": "Patient"}), member),
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text


def test_transaction_with_one_bad_reference_stores_nothing(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    member = f"urn:uuid:{uuid.uuid4()}"
    entries = [_post(_tagged(tag, {"resourceType": "Patient"}), member)]
    entries += [_post(_tagged(tag, _observation(member))) for _ in range(998)]
    entries.append(_post(_tagged(tag, _observation("Patient/absent"))))
    response = client.post("", json=_transaction(*entries), headers=FHIR)
    assert response.status_code == 400
    assert "Patient/absent" in response.text
    assert _count(client, "Patient", tag) == 0
    assert _count(client, "Observation", tag) == 0


def test_a_cycle_created_in_one_transaction(client: httpx.Client) -> None:
    a, b = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"

    def linked(other: str) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "link": [{"other": {"reference": other}, "type": "seealso"}],
        }

    bundle = _transaction(_post(linked(b), a), _post(linked(a), b))
    assert client.post("", json=bundle, headers=FHIR).status_code == 200


# -- on delete ------------------------------------------------------------------------------


def test_deleting_a_referenced_resource_is_409_naming_the_referrers(
    client: httpx.Client,
) -> None:
    patient = _create(client, {"resourceType": "Patient"})
    observations = {_create(client, _observation(f"Patient/{patient}")) for _ in range(3)}
    response = client.delete(f"Patient/{patient}")
    assert response.status_code == 409
    text = response.json()["issue"][0]["diagnostics"]
    assert f"Patient/{patient}" in text
    assert all(f"Observation/{o}" in text for o in observations)
    assert client.get(f"Patient/{patient}").status_code == 200
    for o in observations:
        assert client.delete(f"Observation/{o}").status_code in (200, 204)
    assert client.delete(f"Patient/{patient}").status_code in (200, 204)


def test_deleting_in_a_transaction_what_refers_to_each_other(client: httpx.Client) -> None:
    a, b = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"

    def linked(other: str) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "link": [{"other": {"reference": other}, "type": "seealso"}],
        }

    created = client.post("", json=_transaction(_post(linked(b), a), _post(linked(a), b)))
    first, second = (
        e["response"]["location"].rsplit("/_history", 1)[0] for e in created.json()["entry"]
    )
    obs = _create(client, _observation(first))
    # Only one of them: the other still points at it.
    alone = client.post("", json=_transaction(_delete(first)), headers=FHIR)
    assert alone.status_code == 409
    assert second in alone.text and f"Observation/{obs}" in alone.text
    everything = _transaction(_delete(first), _delete(second), _delete(f"Observation/{obs}"))
    response = client.post("", json=everything, headers=FHIR)
    assert response.status_code == 200, response.text
    assert client.get(first).status_code == 410


def test_delete_allowed_once_the_referrer_points_elsewhere_in_the_same_transaction(
    client: httpx.Client,
) -> None:
    old = _create(client, {"resourceType": "Patient"})
    new = _create(client, {"resourceType": "Patient"})
    obs = _create(client, _observation(f"Patient/{old}"))
    moved = {**_observation(f"Patient/{new}"), "id": obs}
    bundle = _transaction(
        _delete(f"Patient/{old}"),
        {"resource": moved, "request": {"method": "PUT", "url": f"Observation/{obs}"}},
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text


def test_concurrent_delete_and_reference_never_both_win(base: str, client: httpx.Client) -> None:
    patients = [_create(client, {"resourceType": "Patient"}) for _ in range(12)]

    async def race() -> list[tuple[int, int]]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:

            async def delete(patient: str, delay: float) -> int:
                await asyncio.sleep(delay)
                return (await http.delete(f"Patient/{patient}")).status_code

            async def refer(patient: str) -> int:
                body = _observation(f"Patient/{patient}")
                return (await http.post("Observation", json=body, headers=FHIR)).status_code

            async def pair(patient: str, delay: float) -> tuple[int, int]:
                deleted, created = await asyncio.gather(delete(patient, delay), refer(patient))
                return deleted, created

            # The later deletes start while their reference is being written.
            return await asyncio.gather(*(pair(p, n * 0.004) for n, p in enumerate(patients)))

    outcomes = asyncio.run(race())
    for deleted, created in outcomes:
        assert not (deleted in (200, 204) and created == 201), outcomes
        assert deleted in (200, 204, 409) and created in (201, 400, 409), outcomes


# -- configuration --------------------------------------------------------------------------


def test_absolute_references_under_the_configured_base(
    settings: Settings, start_server: type
) -> None:
    ours = "https://fhir.example.org/fhir"
    configured = settings.model_copy(update={"base_url": ours})
    with start_server(configured) as server, httpx.Client(base_url=server.base) as http:
        patient = _create(http, {"resourceType": "Patient"})
        good = _observation(f"{ours}/Patient/{patient}")
        assert http.post("Observation", json=good, headers=FHIR).status_code == 201
        bad = _observation(f"{ours}/Patient/nobody-{patient}")
        response = http.post("Observation", json=bad, headers=FHIR)
        assert response.status_code == 400
        assert f"{ours}/Patient/nobody-{patient}" in response.text


def test_both_checks_can_be_turned_off(settings: Settings, start_server: type) -> None:
    off = settings.model_copy(
        update={
            "enforce_referential_integrity_on_write": False,
            "enforce_referential_integrity_on_delete": False,
        }
    )
    with start_server(off) as server, httpx.Client(base_url=server.base) as http:
        dangling = _observation(f"Patient/not-yet-{uuid.uuid4().hex[:8]}")
        assert http.post("Observation", json=dangling, headers=FHIR).status_code == 201
        patient = _create(http, {"resourceType": "Patient"})
        _create(http, _observation(f"Patient/{patient}"))
        assert http.delete(f"Patient/{patient}").status_code in (200, 204)


def test_reference_to_a_resource_put_later_in_the_same_transaction(client: httpx.Client) -> None:
    patient = f"later-{uuid.uuid4().hex[:12]}"
    bundle = _transaction(
        {
            "resource": {**_observation(f"Patient/{patient}"), "id": f"obs-{patient}"},
            "request": {"method": "PUT", "url": f"Observation/obs-{patient}"},
        },
        {
            "resource": {"resourceType": "Patient", "id": patient},
            "request": {"method": "PUT", "url": f"Patient/{patient}"},
        },
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text


def test_reference_to_what_the_same_transaction_deletes_is_refused(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex
    patient = _create(client, {"resourceType": "Patient"})
    bundle = _transaction(
        _delete(f"Patient/{patient}"), _post(_tagged(tag, _observation(f"Patient/{patient}")))
    )
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 400
    assert f"Patient/{patient}" in response.text
    assert client.get(f"Patient/{patient}").status_code == 200
    assert _count(client, "Observation", tag) == 0
