"""`_summary` and `_elements` on search and read (https://hl7.org/fhir/R4B/search.html#summary,
#elements): what a client gets back, the SUBSETTED tag, and the untouched plain path."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:8]
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
PATIENT_ID = f"sum-ada-{RUN}"
OBSERVATION_ID = f"sum-obs-{RUN}"
DIV = '<div xmlns="http://www.w3.org/1999/xhtml">Ada Lovelace</div>'

PATIENT = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "meta": {"tag": [{"system": "urn:test:run", "code": RUN}]},
    "text": {"status": "generated", "div": DIV},
    "extension": [{"url": "urn:test:ext", "valueString": "x"}],
    "identifier": [{"system": f"urn:test:{RUN}", "value": "ada"}],
    "name": [{"family": "Lovelace", "given": ["Ada"]}],
    "gender": "female",
    "birthDate": "1985-12-10",
    "maritalStatus": {"text": "married"},
    "contact": [{"name": {"family": "Byron"}}],
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": OBSERVATION_ID,
    "text": {"status": "generated", "div": DIV},
    "status": "final",
    "category": [{"text": "vital-signs"}],
    "code": {"text": "blood pressure"},
    "subject": {"reference": f"Patient/{PATIENT_ID}"},
    "valueQuantity": {"value": "DECIMAL", "unit": "kg"},
    "note": [{"text": "after lunch"}],
    "component": [
        {
            "code": {"text": "systolic"},
            "valueQuantity": {"value": 120},
            "referenceRange": [{"text": "< 120"}],
        }
    ],
}


@pytest.fixture(scope="module")
def corpus(client: httpx.Client) -> None:
    for resource in (PATIENT, OBSERVATION):
        url = f"{resource['resourceType']}/{resource['id']}"
        # 1.50 written as JSON text: a Python float would send 1.5.
        body = json.dumps(resource).replace('"DECIMAL"', "1.50")
        response = client.put(url, content=body, headers=FHIR)
        assert response.status_code == 201, response.text


def _only(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    entries = [e for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]
    assert len(entries) == 1
    resource: dict[str, Any] = entries[0]["resource"]
    return resource


PATIENT_SEARCH = f"Patient?_id={PATIENT_ID}"
OBSERVATION_SEARCH = f"Observation?_id={OBSERVATION_ID}"
ALWAYS = {"resourceType", "id", "meta"}


@pytest.mark.parametrize(
    ("url", "keys"),
    [
        pytest.param(
            f"{PATIENT_SEARCH}&_summary=true",
            ALWAYS | {"identifier", "name", "gender", "birthDate"},
            id="search-true",
        ),
        pytest.param(f"{PATIENT_SEARCH}&_summary=text", ALWAYS | {"text"}, id="search-text"),
        pytest.param(
            f"{PATIENT_SEARCH}&_summary=data",
            set(PATIENT) - {"text"},
            id="search-data",
        ),
        pytest.param(
            f"{PATIENT_SEARCH}&_elements=name,birthDate",
            ALWAYS | {"name", "birthDate"},
            id="search-elements",
        ),
        pytest.param(
            f"{PATIENT_SEARCH}&_elements=Patient.gender",
            ALWAYS | {"gender"},
            id="search-elements-qualified",
        ),
        pytest.param(
            f"{OBSERVATION_SEARCH}&_summary=text",
            ALWAYS | {"text", "status", "code"},
            id="search-text-mandatory",
        ),
        pytest.param(
            f"{OBSERVATION_SEARCH}&_elements=value",
            ALWAYS | {"status", "code", "valueQuantity"},
            id="search-elements-choice-and-mandatory",
        ),
        pytest.param(
            f"Patient/{PATIENT_ID}?_summary=true",
            ALWAYS | {"identifier", "name", "gender", "birthDate"},
            id="read-true",
        ),
        pytest.param(f"Patient/{PATIENT_ID}?_summary=text", ALWAYS | {"text"}, id="read-text"),
        pytest.param(
            f"Patient/{PATIENT_ID}?_elements=gender", ALWAYS | {"gender"}, id="read-elements"
        ),
        pytest.param(
            f"Patient/{PATIENT_ID}/_history/1?_summary=data",
            set(PATIENT) - {"text"},
            id="vread-data",
        ),
    ],
)
def test_subset_keeps_these_elements(
    client: httpx.Client, corpus: None, url: str, keys: set[str]
) -> None:
    if url.startswith(("Patient?", "Observation?")):
        resource = _only(client, url)
    else:
        response = client.get(url)
        assert response.status_code == 200, response.text
        assert response.headers["etag"] == 'W/"1"'
        resource = response.json()
    assert set(resource) == keys
    # SUBSETTED joins the tags the resource has.
    assert resource["meta"]["tag"][-1] == SUBSETTED
    assert resource["meta"]["versionId"] == "1"
    if resource["resourceType"] == "Patient":
        assert resource["meta"]["tag"][0] == {"system": "urn:test:run", "code": RUN}


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(PATIENT_SEARCH, id="search"),
        pytest.param(f"{PATIENT_SEARCH}&_summary=false", id="search-false"),
        pytest.param(f"Patient/{PATIENT_ID}", id="read"),
        pytest.param(f"Patient/{PATIENT_ID}?_summary=false", id="read-false"),
    ],
)
def test_whole_resource_without_subset(client: httpx.Client, corpus: None, url: str) -> None:
    resource = _only(client, url) if "?_id" in url else client.get(url).json()
    assert set(resource) == set(PATIENT)
    assert SUBSETTED not in resource["meta"]["tag"]
    assert resource["contact"] == PATIENT["contact"]


def test_summary_true_trims_backbone_elements(client: httpx.Client, corpus: None) -> None:
    resource = _only(client, f"{OBSERVATION_SEARCH}&_summary=true")
    assert set(resource) == ALWAYS | {"status", "code", "subject", "valueQuantity", "component"}
    assert resource["component"] == [
        {"code": {"text": "systolic"}, "valueQuantity": {"value": 120}}
    ]


def test_decimals_stay_exact_in_a_subset(client: httpx.Client, corpus: None) -> None:
    response = client.get(f"{OBSERVATION_SEARCH}&_summary=true")
    assert '"value":1.50' in response.text
    response = client.get(f"Observation/{OBSERVATION_ID}?_elements=value")
    assert '"value":1.50' in response.text


def test_summary_applies_to_included_resources(client: httpx.Client, corpus: None) -> None:
    bundle = client.get(f"{OBSERVATION_SEARCH}&_summary=true&_include=Observation:subject").json()
    included = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [r["id"] for r in included] == [PATIENT_ID]
    assert "contact" not in included[0]
    assert SUBSETTED in included[0]["meta"]["tag"]


@pytest.mark.parametrize(
    ("elements", "patient_keys"),
    [
        pytest.param("status", set(PATIENT), id="bare-names-leave-included-whole"),
        pytest.param("status,Patient.name", ALWAYS | {"name"}, id="qualified-trims-included"),
    ],
)
def test_elements_and_included_resources(
    client: httpx.Client, corpus: None, elements: str, patient_keys: set[str]
) -> None:
    url = f"{OBSERVATION_SEARCH}&_elements={elements}&_include=Observation:subject"
    bundle = client.get(url).json()
    by_mode = {e["search"]["mode"]: e["resource"] for e in bundle["entry"]}
    assert set(by_mode["match"]) == ALWAYS | {"status", "code"}
    assert set(by_mode["include"]) == patient_keys


@pytest.mark.parametrize(
    ("url", "named"),
    [
        pytest.param(f"{PATIENT_SEARCH}&_summary=yes", "_summary", id="search-bad-summary"),
        pytest.param(f"{PATIENT_SEARCH}&_elements=nope", "_elements", id="search-bad-element"),
        pytest.param(
            f"{PATIENT_SEARCH}&_elements=Observation.nope", "_elements", id="search-bad-qualified"
        ),
        pytest.param(
            f"{PATIENT_SEARCH}&_summary=true&_elements=name", "_elements", id="search-both"
        ),
        pytest.param(f"Patient/{PATIENT_ID}?_summary=count", "_summary", id="read-count"),
        pytest.param(f"Patient/{PATIENT_ID}?_elements=value", "_elements", id="read-bad-element"),
    ],
)
def test_subset_errors(client: httpx.Client, corpus: None, url: str, named: str) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"] == [named]
