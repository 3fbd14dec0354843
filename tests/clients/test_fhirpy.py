"""The async fhirpy client (beda-software/fhir-py) used unchanged against the server: what a
Python application written for any FHIR server sees when it points fhirpy at cmfhir."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound
from fhirpy.lib import AsyncFHIRResource

MRN = "urn:test:fhirpy:mrn"


@pytest.fixture
def fhir(base: str) -> AsyncFHIRClient:
    return AsyncFHIRClient(base)


def _patient(fhir: AsyncFHIRClient, family: str, **extra: Any) -> AsyncFHIRResource:
    body: dict[str, Any] = {
        "identifier": [{"system": MRN, "value": uuid.uuid4().hex}],
        "name": [{"family": family, "given": ["Ada"]}],
        "gender": "female",
    }
    return fhir.resource("Patient", **{**body, **extra})


async def _patients(fhir: AsyncFHIRClient, family: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        patient = _patient(fhir, family)
        await patient.save()
        ids.append(patient.id)
    return ids


async def test_save_creates_and_the_resource_reads_back(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "Okafor", birthDate="1980-02-29")
    await patient.save()

    assert patient.id
    assert patient["meta"]["versionId"] == "1"
    read = await fhir.get("Patient", patient.id)
    assert read["resourceType"] == "Patient"
    assert read["name"] == [{"family": "Okafor", "given": ["Ada"]}]
    assert read["birthDate"] == "1980-02-29"
    assert read["identifier"] == patient["identifier"]
    resolved = await fhir.reference("Patient", patient.id).to_resource()
    assert resolved.serialize() == patient.serialize()


async def test_fetch_all_follows_next_links_over_several_pages(fhir: AsyncFHIRClient) -> None:
    family = f"Paged{uuid.uuid4().hex}"
    ids = await _patients(fhir, family, 5)
    search = fhir.resources("Patient").search(family=family).limit(2)

    first_page = await search.fetch_raw()
    assert len(first_page["entry"]) == 2
    assert any(link["relation"] == "next" for link in first_page["link"])
    assert len(await search.fetch()) == 2

    found = await search.fetch_all()
    assert sorted(p.id for p in found) == sorted(ids)
    assert await search.count() == 5
    assert sorted([p.id async for p in search]) == sorted(ids)


@pytest.mark.parametrize(("sort", "descending"), [("_lastUpdated", False), ("-_lastUpdated", True)])
async def test_sorted_paging_keeps_the_order_across_pages(
    fhir: AsyncFHIRClient, sort: str, descending: bool
) -> None:
    family = f"Sorted{uuid.uuid4().hex}"
    ids = await _patients(fhir, family, 5)

    found = await fhir.resources("Patient").search(family=family).sort(sort).limit(2).fetch_all()

    assert sorted(p.id for p in found) == sorted(ids)
    stamps = [p["meta"]["lastUpdated"] for p in found]
    assert stamps == sorted(stamps, reverse=descending)


async def test_search_by_reference_and_resolving_the_reference(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "Referenced")
    await patient.save()
    observation = fhir.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        subject=patient.to_reference(),
        valueQuantity={"value": 72.5, "unit": "kg"},
    )
    await observation.save()

    found = await fhir.resources("Observation").search(subject=patient).fetch_all()
    assert [o.id for o in found] == [observation.id]
    subject = await found[0]["subject"].to_resource()
    assert subject.id == patient.id
    assert subject["name"][0]["family"] == "Referenced"
    assert found[0]["valueQuantity"]["value"] == 72.5


async def test_save_of_a_modified_resource_updates_it(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "Before")
    await patient.save()
    patient["name"][0]["family"] = "After"
    patient["active"] = False

    await patient.save()

    assert patient["meta"]["versionId"] == "2"
    read = await fhir.resources("Patient").search(_id=patient.id).get()
    assert read["name"][0]["family"] == "After"
    assert read["active"] is False
    assert read["meta"]["versionId"] == "2"
    history = await fhir.execute(f"Patient/{patient.id}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert await fhir.resources("Patient").search(family="Before", _id=patient.id).fetch() == []


async def test_refresh_reads_the_current_version(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "Stale")
    await patient.save()
    other = await fhir.resources("Patient").search(_id=patient.id).get()
    other["name"][0]["family"] = "Fresh"
    await other.save()

    await patient.refresh()

    assert patient["name"][0]["family"] == "Fresh"
    assert patient["meta"]["versionId"] == "2"


async def test_delete_then_the_resource_is_gone(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "Deleted")
    await patient.save()

    await patient.delete()

    with pytest.raises(ResourceNotFound, match="deleted"):
        await fhir.get("Patient", patient.id)
    assert await fhir.resources("Patient").search(_id=patient.id).fetch() == []
    with pytest.raises(ResourceNotFound):
        await fhir.resources("Patient").search(_id=patient.id).get()


async def test_conditional_create_with_if_none_exist_returns_the_existing_one(
    base: str, fhir: AsyncFHIRClient
) -> None:
    # fhirpy's own get_or_create() sends the criteria as a query string on the POST (an Aidbox
    # convention); FHIR's conditional create is the If-None-Exist header, which fhirpy sends
    # through its public extra_headers.
    value = uuid.uuid4().hex
    conditional = AsyncFHIRClient(
        base, extra_headers={"If-None-Exist": f"identifier={MRN}|{value}"}
    )
    identifier = [{"system": MRN, "value": value}]

    first = conditional.resource("Patient", identifier=identifier, name=[{"family": "Once"}])
    await first.save()
    second = conditional.resource("Patient", identifier=identifier, name=[{"family": "Twice"}])
    await second.save()

    assert second.id == first.id
    assert second["name"] == [{"family": "Once"}]
    matches = await fhir.resources("Patient").search(identifier=f"{MRN}|{value}").fetch_all()
    assert [p.id for p in matches] == [first.id]


async def test_get_or_create_with_criteria_in_the_query_string(fhir: AsyncFHIRClient) -> None:
    # The server reads criteria in a create's query string as If-None-Exist, so fhirpy's
    # get_or_create() finds instead of duplicating.
    value = uuid.uuid4().hex
    identifier = [{"system": MRN, "value": value}]
    search = fhir.resources("Patient").search(identifier=f"{MRN}|{value}")
    first, created = await search.get_or_create(fhir.resource("Patient", identifier=identifier))
    again, created_again = await search.get_or_create(
        fhir.resource("Patient", identifier=identifier)
    )
    assert created and not created_again
    assert again.id == first.id
    assert len(await search.fetch_all()) == 1


async def test_conditional_update_creates_then_updates(fhir: AsyncFHIRClient) -> None:
    value = uuid.uuid4().hex
    by_identifier = fhir.resources("Patient").search(identifier=f"{MRN}|{value}")

    def body(family: str) -> AsyncFHIRResource:
        return fhir.resource(
            "Patient", identifier=[{"system": MRN, "value": value}], name=[{"family": family}]
        )

    created, was_created = await by_identifier.update(body("First"))
    updated, was_created_again = await by_identifier.update(body("Second"))

    assert (was_created, was_created_again) == (True, False)
    assert updated.id == created.id
    assert updated["meta"]["versionId"] == "2"
    assert [p["name"][0]["family"] for p in await by_identifier.fetch_all()] == ["Second"]


async def test_conditional_delete_by_search(fhir: AsyncFHIRClient) -> None:
    patient = _patient(fhir, "CondDeleted")
    await patient.save()
    by_identifier = fhir.resources("Patient").search(
        identifier=f"{MRN}|{patient['identifier'][0]['value']}"
    )

    _, status = await by_identifier.delete()

    assert status in (200, 204)
    assert await by_identifier.fetch_all() == []
    with pytest.raises(ResourceNotFound):
        await fhir.get("Patient", patient.id)


async def test_an_invalid_resource_is_refused_with_the_servers_operation_outcome(
    fhir: AsyncFHIRClient,
) -> None:
    family = f"Invalid{uuid.uuid4().hex}"
    patient = _patient(fhir, family, gender="robot")

    with pytest.raises(OperationOutcome) as refused:
        await patient.save()

    outcome = refused.value.resource
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert "robot" in str(outcome)
    assert patient.id is None
    assert await fhir.resources("Patient").search(family=family).fetch() == []


async def test_patch_with_a_merge_document_is_refused_and_changes_nothing(
    fhir: AsyncFHIRClient,
) -> None:
    # fhirpy's patch() sends a JSON merge document as application/json; R4B defines JSON Patch
    # (https://hl7.org/fhir/R4B/http.html#patch), so the user gets a clear 415 instead.
    patient = _patient(fhir, "Unpatched", active=True)
    await patient.save()

    with pytest.raises(OperationOutcome) as refused:
        await fhir.patch("Patient", patient.id, active=False)

    assert refused.value.resource["issue"][0]["code"] == "not-supported"
    assert "json-patch" in refused.value.resource["issue"][0]["diagnostics"]
    read = await fhir.get("Patient", patient.id)
    assert read["active"] is True
    assert read["meta"]["versionId"] == "1"
