"""Limits that protect the server and its data: 1 MB strings
(https://hl7.org/fhir/R4B/datatypes.html#primitive), what the GET entries of one Bundle may
return, and JSON Patch errors that quote nothing stored."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings

FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}
MB = 1024 * 1024


def _patient(marker: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:limits", "value": marker}],
        **extra,
    }


def _stored(client: httpx.Client, marker: str) -> int:
    found = client.get("Patient", params={"identifier": f"urn:test:limits|{marker}"})
    assert found.status_code == 200, found.text[:300]
    total: int = found.json()["total"]
    return total


def _refusal(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return outcome


# --- strings SHALL NOT exceed 1MB ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param("a" * (MB + 1), {"name": [{"family": None}]}, id="ascii-family"),
        # 524,289 characters, but 1 MiB + 2 bytes of UTF-8.
        pytest.param("é" * (MB // 2 + 1), {"name": [{"given": ["x", None]}]}, id="utf8-given"),
        pytest.param("b" * (3 * MB), {"address": [{"line": [None]}]}, id="address-line"),
    ],
)
def test_string_over_1_mb_is_refused_naming_the_element(
    client: httpx.Client, value: str, where: dict[str, Any]
) -> None:
    marker = uuid.uuid4().hex
    text = json.dumps(_patient(marker, **where)).replace("null", json.dumps(value))
    response = client.post("Patient", content=text.encode(), headers=FHIR)
    outcome = _refusal(response)
    issue = outcome["issue"][0]
    assert issue["code"] == "too-long"
    key = next(iter(where))
    expected = {
        "name": ["Patient.name[0].family", "Patient.name[0].given[1]"],
        "address": ["Patient.address[0].line[0]"],
    }[key]
    assert issue["expression"][0] in expected
    assert "1MB" in issue["diagnostics"]
    assert len(response.content) < 10_000  # the value is not echoed
    assert _stored(client, marker) == 0


def test_string_of_exactly_1_mb_is_stored(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    response = client.post("Patient", json=_patient(marker, name=[{"family": "z" * MB}]))
    assert response.status_code == 201, response.text[:300]
    assert _stored(client, marker) == 1


def test_base64binary_may_exceed_1_mb(client: httpx.Client) -> None:
    """The limit is stated for string; an attachment's base64 data has none."""
    data = base64.b64encode(b"\x00\x01" * MB).decode()  # 2 MiB of bytes, 2.7 MB of text
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}],
    }
    response = client.post("DocumentReference", json=document)
    assert response.status_code == 201, response.text[:300]
    read = client.get(f"DocumentReference/{response.json()['id']}")
    assert read.json()["content"][0]["attachment"]["data"] == data


def test_long_string_in_a_contained_resource_and_an_extension(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    patient = _patient(
        marker,
        contained=[{"resourceType": "Organization", "id": "o", "name": "n" * (MB + 10)}],
        managingOrganization={"reference": "#o"},
        extension=[{"url": "http://example.org/x", "valueString": "s" * (MB + 10)}],
    )
    outcome = _refusal(client.post("Patient", json=patient))
    locations = {issue["expression"][0] for issue in outcome["issue"]}
    assert locations == {"Patient.contained[0].name", "Patient.extension[0].valueString"}
    assert _stored(client, marker) == 0


def test_long_string_in_a_transaction_names_the_entry(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": _patient(marker)},
            {
                "request": {"method": "POST", "url": "Patient"},
                "resource": _patient(marker, name=[{"text": "t" * (MB + 1)}]),
            },
        ],
    }
    outcome = _refusal(client.post("", json=bundle))
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.name[0].text"]
    assert _stored(client, marker) == 0


def test_long_string_under_an_unknown_resource_type_is_a_400(client: httpx.Client) -> None:
    body = {"resourceType": "NoSuchType", "text": "u" * (MB + 1)}
    outcome = _refusal(client.post("Patient", json=body))
    assert outcome["issue"][0]["expression"] == ["NoSuchType.text"]


def test_patch_cannot_add_a_long_string(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    created = client.post("Patient", json=_patient(marker))
    id = created.json()["id"]
    operations = [{"op": "add", "path": "/name", "value": [{"family": "p" * (MB + 1)}]}]
    outcome = _refusal(client.patch(f"Patient/{id}", json=operations, headers=PATCH))
    assert outcome["issue"][0]["expression"] == ["Patient.name[0].family"]
    assert client.get(f"Patient/{id}").json()["meta"]["versionId"] == "1"


# --- JSON Patch errors quote nothing stored --------------------------------------------------


SECRET = "Zyxwvutsr"


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param({"op": "test", "path": "/name/0/family", "value": "Guess"}, id="test"),
        pytest.param({"op": "test", "path": "/name/0/nosuch", "value": "x"}, id="test-missing"),
        pytest.param({"op": "replace", "path": "/name/0/nosuch/x", "value": "x"}, id="replace"),
        pytest.param({"op": "remove", "path": "/name/0/family/x"}, id="into-a-string"),
        pytest.param({"op": "add", "path": "/name/0/x/y", "value": 1}, id="add-missing"),
        pytest.param({"op": "move", "from": "/name/0/nosuch", "path": "/x"}, id="move"),
    ],
)
def test_failed_patch_does_not_quote_the_stored_resource(
    client: httpx.Client, operation: dict[str, Any]
) -> None:
    """Whoever may patch may not be allowed to read: a failure names the operation and its
    path, never the values it compared or the objects it looked in."""
    created = client.post("Patient", json=_patient(uuid.uuid4().hex, name=[{"family": SECRET}]))
    id = created.json()["id"]
    response = client.patch(f"Patient/{id}", json=[operation], headers=PATCH)
    assert response.status_code == 422, response.text
    assert SECRET not in response.text
    assert operation["path"] in response.json()["issue"][0]["diagnostics"]
    assert client.get(f"Patient/{id}").json()["meta"]["versionId"] == "1"


def test_failed_patch_test_in_a_transaction_quotes_nothing(client: httpx.Client) -> None:
    created = client.post("Patient", json=_patient(uuid.uuid4().hex, name=[{"family": SECRET}]))
    id = created.json()["id"]
    operations = [{"op": "test", "path": "/name/0/family", "value": "Guess"}]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {"method": "PATCH", "url": f"Patient/{id}"},
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(json.dumps(operations).encode()).decode(),
                },
            }
        ],
    }
    response = client.post("", json=bundle)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "422"
    assert SECRET not in response.text


# --- what the GET entries of one Bundle may return -----------------------------------------


@pytest.fixture(scope="module")
def tagged(client: httpx.Client) -> str:
    """30 Patients with a tag of their own."""
    tag = uuid.uuid4().hex
    entries = [
        {
            "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "meta": {"tag": [{"code": tag}]}},
        }
        for _ in range(30)
    ]
    response = client.post("", json={"resourceType": "Bundle", "type": "batch", "entry": entries})
    assert response.status_code == 200, response.text[:300]
    return tag


def _searches(tag: str, times: int) -> dict[str, Any]:
    entry = {"request": {"method": "GET", "url": f"Patient?_tag={tag}&_count=1000"}}
    return {"resourceType": "Bundle", "type": "batch", "entry": [entry] * times}


def test_batch_of_searches_stops_at_the_entry_budget(
    start_server: Any, settings: Settings, tagged: str
) -> None:
    limited = settings.model_copy(update={"max_response_entries": 50})
    with start_server(limited) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        response = http.post("", json=_searches(tagged, 5))
    assert response.status_code == 200, response.text[:300]
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["200", "200", "413", "413", "413"]
    first, second = (e["resource"] for e in entries[:2])
    assert len(first["entry"]) == 30
    # The second page is cut to what was left, and its next link reaches the rest.
    assert len(second["entry"]) == 20
    assert any(link["relation"] == "next" for link in second["link"])
    outcome = entries[2]["response"]["outcome"]
    assert outcome["issue"][0]["code"] == "too-costly"


def test_transaction_past_the_entry_budget_is_refused(
    start_server: Any, settings: Settings, tagged: str
) -> None:
    limited = settings.model_copy(update={"max_response_entries": 50})
    bundle = _searches(tagged, 3)
    bundle["type"] = "transaction"
    with start_server(limited) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        response = http.post("", json=bundle)
    outcome = _refusal(response, 413)
    assert outcome["issue"][0]["code"] == "too-costly"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[2]"]


def test_batch_of_searches_stops_at_the_byte_budget(
    client: httpx.Client, start_server: Any, settings: Settings, tagged: str
) -> None:
    page = client.get("Patient", params={"_tag": tagged, "_count": "1000"})
    assert len(page.json()["entry"]) == 30
    # Room for one page of the 30, not two.
    limited = settings.model_copy(update={"max_response_bytes": len(page.content) + 100})
    with start_server(limited) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        response = http.post("", json=_searches(tagged, 3))
    statuses = [e["response"]["status"][:3] for e in response.json()["entry"]]
    assert statuses == ["200", "413", "413"]


def test_default_budget_answers_a_batch_of_searches(client: httpx.Client, tagged: str) -> None:
    response = client.post("", json=_searches(tagged, 20))
    assert response.status_code == 200
    assert all(e["response"]["status"].startswith("200") for e in response.json()["entry"])


def test_one_search_page_past_the_byte_limit_is_refused(
    client: httpx.Client, start_server: Any, settings: Settings, tagged: str
) -> None:
    page = client.get("Patient", params={"_tag": tagged, "_count": "1000"}).json()
    resources = [json.dumps(e["resource"], separators=(",", ":")) for e in page["entry"]]
    assert len(resources) == 30
    # Room for about 15 of the 30 resources in one response.
    limited = settings.model_copy(update={"max_response_bytes": sum(map(len, resources)) // 2})
    with start_server(limited) as server, httpx.Client(base_url=server.base, timeout=60) as http:
        refused = http.get("Patient", params={"_tag": tagged, "_count": "1000"})
        smaller = http.get("Patient", params={"_tag": tagged, "_count": "10"})
        in_batch = http.post("", json=_searches(tagged, 1))
    outcome = _refusal(refused, 413)
    assert outcome["issue"][0]["code"] == "too-costly"
    assert "_count" in outcome["issue"][0]["diagnostics"]
    assert smaller.status_code == 200
    assert len(smaller.json()["entry"]) == 10
    assert in_batch.json()["entry"][0]["response"]["status"].startswith("413")
