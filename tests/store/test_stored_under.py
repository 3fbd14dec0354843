"""A parameter that is the union of others (`combo-code` is `code` | `component-code`) has
no index rows of its own and is searched in theirs: every way of searching it keeps the
meaning the spec gives it, and the migration deletes what the core definitions store
elsewhere (`SearchParameterRegistry.stored_under`)."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from cmfhir.config import Settings
from cmfhir.resources.index_values import composite_components
from cmfhir.resources.search_parameters import load_registry

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:8]
S = "urn:test:combo"
ROOT = Path(__file__).parents[2]


def test_the_migration_deletes_what_the_core_definitions_store_elsewhere() -> None:
    spec = importlib.util.spec_from_file_location(
        "stored_under", ROOT / "migrations" / "versions" / "0017_stored_under.py"
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    registry = load_registry(ROOT / "profiles")
    derived = set()
    for resource_type in registry.resource_types():
        for code, under in registry.stored_under(resource_type).items():
            parameter = registry.get(resource_type, code)
            assert parameter is not None
            components = composite_components(registry, parameter) or (parameter,)
            derived.add((resource_type, code, ",".join(c.type for c in components), under))
    assert derived == set(migration.STORED_UNDER)
    assert ("Observation", "combo-code", "token", ("code", "component-code")) in derived


def _component(code: str, value: int) -> dict[str, Any]:
    return {"code": {"coding": [{"system": S, "code": code}]}, "valueQuantity": {"value": value}}


# a: code X without a value, components Y=10 and Z=20; b: code Y = 10; c: code W, nothing.
X, Y, Z, W = (f"{RUN}-{letter}" for letter in ("a", "b", "c", "w"))
OBSERVATIONS = {
    "a": {"code": X, "component": [_component(Y, 10), _component(Z, 20)]},
    "b": {"code": Y, "valueQuantity": {"value": 10}},
    "c": {"code": f"{RUN}-d"},
}


@pytest.fixture(scope="module")
def corpus(client: httpx.Client) -> None:
    entries = [
        {
            "resource": {"resourceType": "Patient", "id": f"combo-{RUN}"},
            "request": {"method": "PUT", "url": f"Patient/combo-{RUN}"},
        }
    ]
    for name, fields in OBSERVATIONS.items():
        body = {
            "resourceType": "Observation",
            "id": f"combo-{RUN}-{name}",
            "status": "final",
            "subject": {"reference": f"Patient/combo-{RUN}"},
            **fields,
            "code": {"coding": [{"system": S, "code": fields["code"]}]},
        }
        entries.append(
            {"resource": body, "request": {"method": "PUT", "url": f"Observation/{body['id']}"}}
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text[:300]


def _ids(client: httpx.Client, path: str, params: dict[str, str]) -> list[str]:
    response = client.get(path, params={**params, "_count": "2"})
    found = []
    while True:
        assert response.status_code == 200, response.text[:300]
        bundle = response.json()
        found += [e["resource"]["id"].rsplit("-", 1)[-1] for e in bundle.get("entry", [])]
        following = [x["url"] for x in bundle.get("link", []) if x["relation"] == "next"]
        if not following:
            return found
        response = client.get(following[0])


MINE = f"combo-{RUN}-a,combo-{RUN}-b,combo-{RUN}-c"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"combo-code": X}, ["a"], id="code"),
        pytest.param({"combo-code": f"{S}|{Y}"}, ["a", "b"], id="component-code"),
        pytest.param({"combo-code": f"{Z},{W}"}, ["a"], id="or"),
        pytest.param({"_id": MINE, "combo-code:not": Y}, ["c"], id="not"),
        pytest.param({"_id": MINE, "combo-value-quantity:missing": "true"}, ["c"], id="missing"),
        pytest.param({"_id": MINE, "combo-value-quantity": "10"}, ["a", "b"], id="quantity"),
        pytest.param({"combo-code-value-quantity": f"{Y}$10"}, ["a", "b"], id="composite"),
        pytest.param({"combo-code-value-quantity": f"{Z}$20"}, ["a"], id="composite-component"),
        pytest.param({"combo-code-value-quantity": f"{Y}$20"}, [], id="one-repetition"),
        pytest.param({"combo-code-value-quantity": f"{X}$10"}, [], id="code-without-value"),
        pytest.param({"_id": MINE, "_sort": "combo-code"}, ["a", "b", "c"], id="sort"),
        pytest.param({"_id": MINE, "_sort": "-combo-code"}, ["c", "a", "b"], id="sort-desc"),
    ],
)
def test_a_union_parameter_is_searched_in_the_rows_of_its_operands(
    client: httpx.Client, corpus: None, params: dict[str, str], expected: list[str]
) -> None:
    found = _ids(client, "Observation", params)
    if "_sort" in params:
        assert found == expected
    else:
        assert sorted(found) == expected


def test_chains_and_has_read_them_too(client: httpx.Client, corpus: None) -> None:
    has = {"_id": f"combo-{RUN}", "_has:Observation:subject:combo-code": Z}
    assert _ids(client, "Patient", has) == [RUN]
    has["_has:Observation:subject:combo-code"] = f"{RUN}-none"
    assert _ids(client, "Patient", has) == []


def test_no_rows_are_stored_under_a_union_parameter(
    client: httpx.Client, corpus: None, settings: Settings
) -> None:
    async def params() -> set[str]:
        conn = await asyncpg.connect(settings.database_url or "")
        try:
            rows = await conn.fetch(
                "SELECT x.param FROM resource r JOIN idx_token x ON x.rid = r.rid"
                " WHERE r.resource_type = 'Observation' AND r.id = $1"
                " UNION SELECT q.param FROM resource r JOIN idx_quantity q ON q.rid = r.rid"
                " WHERE r.resource_type = 'Observation' AND r.id = $1",
                f"combo-{RUN}-a",
            )
        finally:
            await conn.close()
        return {row[0].split("$")[0] for row in rows}

    stored = asyncio.run(params())
    assert {"code", "component-code", "component-code-value-quantity"} <= stored
    assert not any(p.startswith("combo-") for p in stored)
