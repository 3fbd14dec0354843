"""Operations over real HTTP: routing at system, type and instance level from the
OperationDefinitions in profiles/operations/, $versions, $validate, $meta, $meta-add,
$meta-delete, and a streamed operation."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings, default_profiles_dir
from cmfhir.interactions import FhirContext, Result
from cmfhir.interactions.operations import IMPLEMENTATIONS, OperationCall

FHIR = {"Content-Type": "application/fhir+json"}
TAG = {"system": "urn:cmfhir:test", "code": "vip"}
SECURITY = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}


def assert_outcome(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    text = json.dumps(body)
    for word in words:
        assert word in text, text
    return body


def marker_patient(marker: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:op", "value": marker}],
        **extra,
    }


def total(client: httpx.Client, marker: str) -> int:
    found = client.get("Patient", params={"identifier": f"urn:test:op|{marker}"}).json()
    return int(found["total"])


@pytest.fixture
def patient(client: httpx.Client) -> dict[str, Any]:
    created = client.post("Patient", json=marker_patient(uuid.uuid4().hex), headers=FHIR)
    assert created.status_code == 201
    body: dict[str, Any] = created.json()
    return body


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["$lookup", "Patient/$lookup", "Patient/{id}/$lookup", "$convert", "Patient/$x"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_operation_is_404_naming_it(
    client: httpx.Client, patient: dict[str, Any], path: str, method: str
) -> None:
    response = client.request(method, path.format(id=patient["id"]))
    name = path.rsplit("/", 1)[-1]
    body = assert_outcome(response, 404, f"Unknown operation '{name}'")
    assert "resource type" not in json.dumps(body)


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("GET", "Patient/$versions", ["$versions", "type level", "system level"]),
        ("GET", "Patient/{id}/$versions", ["$versions", "instance level"]),
        ("POST", "$validate", ["$validate", "system level"]),
        ("GET", "$meta", ["$meta", "system level", "instance level"]),
        ("POST", "Patient/$meta-add", ["$meta-add", "type level"]),
    ],
)
def test_known_operation_at_the_wrong_level_is_400(
    client: httpx.Client, patient: dict[str, Any], method: str, path: str, words: list[str]
) -> None:
    response = client.request(method, path.format(id=patient["id"]))
    assert_outcome(response, 400, *words)


def test_operation_on_unknown_type_is_404(client: httpx.Client) -> None:
    assert_outcome(client.get("Nope/$validate"), 404, "Nope")


def test_operation_on_bad_id_is_400(client: httpx.Client) -> None:
    assert_outcome(client.get("Patient/a_b/$meta"), 400, "a_b")


def test_get_of_an_operation_that_changes_data_is_405(
    client: httpx.Client, patient: dict[str, Any]
) -> None:
    response = client.get(f"Patient/{patient['id']}/$meta-add")
    assert_outcome(response, 405, "POST")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["$versions", "Patient/$validate", "Patient/{id}/$meta"])
def test_other_methods_on_an_operation_are_405(
    client: httpx.Client, patient: dict[str, Any], method: str, path: str
) -> None:
    response = client.request(method, path.format(id=patient["id"]), json=patient)
    assert_outcome(response, 405, "GET or POST")
    assert client.get(f"Patient/{patient['id']}").json()["meta"]["versionId"] == "1"


def test_unknown_parameter_is_400(client: httpx.Client) -> None:
    assert_outcome(client.get("$versions", params={"foo": "1"}), 400, "foo")


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Parameters", "parameter": "x"},
        {"resourceType": "Parameters", "parameter": [{"value": 1}]},
        {"resourceType": "Parameters", "parameter": [{"name": "nope", "valueCode": "x"}]},
        [1, 2],
    ],
)
def test_malformed_parameters_body_is_400(client: httpx.Client, body: Any) -> None:
    response = client.post("Patient/$validate", json=body, headers=FHIR)
    assert_outcome(response, 400)


def test_operation_body_must_be_json(client: httpx.Client) -> None:
    response = client.post(
        "Patient/$validate", content=b"<Patient/>", headers={"Content-Type": "application/xml"}
    )
    assert_outcome(response, 415)


# --- $versions -------------------------------------------------------------------------------


def test_versions_plain_json(client: httpx.Client) -> None:
    response = client.get("$versions", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"versions": ["4.0", "4.3"], "default": "4.0"}
    assert response.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("accept", [None, "application/fhir+json"])
def test_versions_parameters(client: httpx.Client, accept: str | None) -> None:
    response = client.get("$versions", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.json() == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "version", "valueCode": "4.0"},
            {"name": "version", "valueCode": "4.3"},
            {"name": "default", "valueCode": "4.0"},
        ],
    }
    assert response.headers["Content-Type"].startswith("application/fhir+json")


def test_versions_by_post(client: httpx.Client) -> None:
    response = client.post("$versions")
    assert response.status_code == 200
    assert response.json()["resourceType"] == "Parameters"


# --- $validate -------------------------------------------------------------------------------


def test_validate_valid_resource_posted_as_is(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    response = client.post("Patient/$validate", json=marker_patient(marker), headers=FHIR)
    body = assert_outcome(response, 200)
    assert [i["severity"] for i in body["issue"]] == ["information"]
    assert total(client, marker) == 0


def test_validate_invalid_resource_lists_issues_and_stores_nothing(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    invalid = marker_patient(marker, gender="sometimes", birthDate="yesterday")
    response = client.post("Patient/$validate", json=invalid, headers=FHIR)
    body = assert_outcome(response, 200, "gender", "birthDate")
    assert all(i["severity"] == "error" for i in body["issue"])
    assert total(client, marker) == 0


def test_validate_in_parameters_with_mode(client: httpx.Client) -> None:
    marker = uuid.uuid4().hex
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": marker_patient(marker, gender="nope")},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    response = client.post("Patient/$validate", json=parameters, headers=FHIR)
    assert_outcome(response, 200, "gender")
    assert total(client, marker) == 0


def test_validate_wrong_type_for_the_url(client: httpx.Client) -> None:
    response = client.post("Observation/$validate", json={"resourceType": "Patient"}, headers=FHIR)
    body = assert_outcome(response, 200, "Observation")
    assert body["issue"][0]["severity"] == "error"


def test_validate_update_mode_needs_the_urls_id(
    client: httpx.Client, patient: dict[str, Any]
) -> None:
    url = f"Patient/{patient['id']}/$validate?mode=update"
    same = client.post(url, json={**patient, "gender": "male"}, headers=FHIR)
    assert assert_outcome(same, 200)["issue"][0]["severity"] == "information"
    other = client.post(url, json={**patient, "id": "someone-else"}, headers=FHIR)
    assert_outcome(other, 200, "someone-else", "differs")
    without = {k: v for k, v in patient.items() if k != "id"}
    assert_outcome(client.post(url, json=without, headers=FHIR), 200, "needs the resource's id")
    assert client.get(f"Patient/{patient['id']}").json()["meta"]["versionId"] == "1"


def test_validate_delete_mode(client: httpx.Client, patient: dict[str, Any]) -> None:
    response = client.post(f"Patient/{patient['id']}/$validate?mode=delete")
    assert assert_outcome(response, 200)["issue"][0]["severity"] == "information"
    assert client.get(f"Patient/{patient['id']}").status_code == 200
    assert_outcome(client.post("Patient/not-there-1/$validate?mode=delete"), 404)
    assert_outcome(client.post("Patient/$validate?mode=delete"), 400, "[type]/[id]")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("mode=profile", ["mode 'profile' is not supported"]),
        ("mode=banana", ["banana"]),
        ("profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient", ["core"]),
    ],
)
def test_validate_refuses_what_it_cannot_do(
    client: httpx.Client, query: str, words: list[str]
) -> None:
    response = client.post(f"Patient/$validate?{query}", json={"resourceType": "Patient"})
    assert_outcome(response, 400, *words)


def test_validate_accepts_the_core_profile(client: httpx.Client) -> None:
    response = client.post(
        "Patient/$validate?profile=http://hl7.org/fhir/StructureDefinition/Patient",
        json={"resourceType": "Patient"},
    )
    assert assert_outcome(response, 200)["issue"][0]["severity"] == "information"


def test_validate_without_resource_is_400(client: httpx.Client) -> None:
    assert_outcome(client.post("Patient/$validate"), 400, "needs the resource")


# --- $meta, $meta-add, $meta-delete ------------------------------------------------------------


def meta_parameters(**meta: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def returned_meta(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters"
    assert body["parameter"][0]["name"] == "return"
    meta: dict[str, Any] = body["parameter"][0]["valueMeta"]
    return meta


def tagged(client: httpx.Client, id: str) -> bool:
    found = client.get("Patient", params={"_tag": "urn:cmfhir:test|vip", "_id": id}).json()
    return bool(found["total"])


def test_meta_returns_the_current_meta(client: httpx.Client, patient: dict[str, Any]) -> None:
    meta = returned_meta(client.get(f"Patient/{patient['id']}/$meta"))
    assert meta == patient["meta"]


def test_meta_add_then_delete_keeps_the_version(
    client: httpx.Client, patient: dict[str, Any]
) -> None:
    id = patient["id"]
    profile = "http://example.org/StructureDefinition/p"
    added = returned_meta(
        client.post(
            f"Patient/{id}/$meta-add",
            json=meta_parameters(tag=[TAG], security=[SECURITY], profile=[profile]),
        )
    )
    assert added["tag"] == [TAG] and added["security"] == [SECURITY]
    assert added["profile"] == [profile]
    assert added["versionId"] == "1"
    assert added["lastUpdated"] == patient["meta"]["lastUpdated"]
    read = client.get(f"Patient/{id}")
    assert read.headers["ETag"] == 'W/"1"'
    assert read.json()["meta"] == added
    assert client.get(f"Patient/{id}/_history/1").json()["meta"] == added
    assert client.get(f"Patient/{id}/_history").json()["total"] == 1
    assert tagged(client, id)

    # Adding the same tag again (another display) makes no duplicate.
    again = returned_meta(
        client.post(
            f"Patient/{id}/$meta-add", json=meta_parameters(tag=[{**TAG, "display": "VIP"}])
        )
    )
    assert again["tag"] == [TAG]

    removed = returned_meta(
        client.post(f"Patient/{id}/$meta-delete", json=meta_parameters(tag=[TAG]))
    )
    assert "tag" not in removed
    assert removed["security"] == [SECURITY]
    assert not tagged(client, id)
    assert client.get(f"Patient/{id}").json()["meta"] == removed
    assert client.get(f"Patient/{id}").headers["ETag"] == 'W/"1"'


def test_meta_add_with_an_invalid_coding_changes_nothing(
    client: httpx.Client, patient: dict[str, Any]
) -> None:
    response = client.post(
        f"Patient/{patient['id']}/$meta-add", json=meta_parameters(tag=[{"code": 7}])
    )
    assert_outcome(response, 400)
    assert client.get(f"Patient/{patient['id']}").json()["meta"] == patient["meta"]


def test_meta_add_needs_meta(client: httpx.Client, patient: dict[str, Any]) -> None:
    response = client.post(f"Patient/{patient['id']}/$meta-add")
    assert_outcome(response, 400, "meta")


def test_meta_of_deleted_and_unknown(client: httpx.Client, patient: dict[str, Any]) -> None:
    assert client.delete(f"Patient/{patient['id']}").status_code in (200, 204)
    assert_outcome(client.get(f"Patient/{patient['id']}/$meta"), 410)
    response = client.post(f"Patient/{patient['id']}/$meta-add", json=meta_parameters(tag=[TAG]))
    assert_outcome(response, 410)
    assert_outcome(client.get("Patient/never-was-1/$meta"), 404)


# --- streaming -------------------------------------------------------------------------------

STREAMED = {
    "resourceType": "OperationDefinition",
    "url": "https://cmfhir.org/fhir/OperationDefinition/test-stream",
    "name": "TestStream",
    "status": "active",
    "kind": "operation",
    "code": "test-stream",
    "affectsState": False,
    "system": False,
    "type": True,
    "instance": False,
    "resource": ["Patient"],
    "parameter": [{"name": "lines", "use": "in", "min": 1, "max": "1", "type": "integer"}],
}


async def _stream(ctx: FhirContext, call: OperationCall) -> Result:
    lines = int(call.value("lines"))

    async def chunks() -> AsyncIterator[bytes]:
        for n in range(lines):
            yield b'{"resourceType":"Basic","id":"%d"}\n' % n

    return Result(200, stream=chunks(), media_type="application/fhir+ndjson")


def test_an_operation_can_stream(
    tmp_path: Path, database_url: str, start_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(default_profiles_dir(), profiles)
    (profiles / "operations" / "test-stream.json").write_text(json.dumps(STREAMED))
    monkeypatch.setitem(IMPLEMENTATIONS, "test-stream", _stream)
    settings = Settings(database_url=database_url, profiles_dir=profiles)
    with start_server(settings) as server, httpx.Client(base_url=server.base) as http:
        with http.stream("GET", "Patient/$test-stream", params={"lines": "20000"}) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
            assert "content-length" not in response.headers
            lines = list(response.iter_lines())
        assert len(lines) == 20000
        assert json.loads(lines[-1]) == {"resourceType": "Basic", "id": "19999"}
        statement = http.get("metadata").json()
        patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
        assert "test-stream" in {o["name"] for o in patient["operation"]}
        assert_outcome(http.get("Observation/$test-stream?lines=1"), 400, "Observation")
        assert_outcome(http.get("Patient/$test-stream?lines=x"), 400, "integer")
