"""`DirectRoutes` (routes/fhir.py) serves `GET /fhir/{type}/{id}` and `GET /fhir/{type}`
without the router: it must take exactly the requests the router would give to the read and
search endpoints, and answer them as those endpoints do, errors included."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cmfhir.app import create_app
from cmfhir.config import Settings
from cmfhir.resources.fhir_versions import R4, R4B, fhir_versions
from cmfhir.routes import fhir
from cmfhir.routes.read_path import READ_PATH

FHIR = {"Content-Type": "application/fhir+json"}


def _routes(routes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out.extend(_routes(inner.routes) if inner is not None else [route])
    return out


def _routed(routes: list[Any], path: str) -> Any:
    """The endpoint the router gives `GET path`: the first route that matches it fully."""
    for route in routes:
        if "GET" in (route.methods or ()) and route.path_regex.fullmatch(path):
            return route.endpoint
    return None


def test_direct_paths_are_the_router_s_read_and_search() -> None:
    """Every path the direct routes take, for every type of both versions, is one the
    router gives to the same endpoint: a route added in front of them with such a path
    would fail here."""
    routes = _routes(create_app(Settings(database_url="postgresql://unused/x")).router.routes)
    versions = fhir_versions()
    types = versions.resource_types(R4) | versions.resource_types(R4B)
    for resource_type in sorted(types):
        read = f"/fhir/{resource_type}/a-1.B"
        search = f"/fhir/{resource_type}"
        assert fhir._READ.fullmatch(read) and fhir.SEARCH_PATH.fullmatch(search)
        assert _routed(routes, read) is fhir.read_instance, read
        assert _routed(routes, search) is fhir.search_type, search
        # The read path (routes/read_path.py), in front of everything, takes reads and vreads.
        vread = f"/fhir/{resource_type}/a-1.B/_history/2"
        assert READ_PATH.fullmatch(read) and READ_PATH.fullmatch(vread)
        assert _routed(routes, vread) is fhir.vread_instance, vread
    for path in ("/fhir/metadata", "/fhir/_history", "/fhir/$export", "/fhir/Patient/$export"):
        assert not fhir._READ.fullmatch(path) and not fhir.SEARCH_PATH.fullmatch(path)
    for path in ("/fhir/Patient/_history", "/fhir/.well-known/smart-configuration"):
        assert not fhir._READ.fullmatch(path)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        pytest.param("Nonesuch/1", 404, "not-found", id="read-unknown-type"),
        pytest.param("Patient/direct-no-such", 404, "not-found", id="read-missing"),
        pytest.param("Nonesuch", 404, "not-found", id="search-unknown-type"),
        pytest.param("Patient?nonesuch=1", 400, "not-supported", id="search-unknown-param"),
    ],
)
def test_errors_are_rendered_as_by_the_router(
    client: httpx.Client, path: str, status: int, code: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/fhir+json")
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_read_and_search_answer_as_before(client: httpx.Client) -> None:
    made = client.put(
        "Patient/direct-1", json={"resourceType": "Patient", "id": "direct-1"}, headers=FHIR
    )
    assert made.status_code in (200, 201), made.text
    read = client.get("Patient/direct-1")
    assert read.status_code == 200
    assert read.headers["etag"] == made.headers["etag"]
    assert read.headers["last-modified"] and read.headers["x-request-id"]
    assert read.headers["content-type"].startswith("application/fhir+json; fhirVersion=4.0")
    assert read.json()["id"] == "direct-1"
    again = client.get("Patient/direct-1", headers={"If-None-Match": made.headers["etag"]})
    assert again.status_code == 304
    found = client.get("Patient", params={"_id": "direct-1"})
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == ["direct-1"]
