"""Transactions at the documented entry limit (20,000, docs/configuration.md) work for every
method: no statement grows with the number of entries (12,000 keys in one row-value IN list
exceeded PostgreSQL's stack depth), and no per-key lock runs out PostgreSQL's lock table."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx

from cmfhir.config import Settings

FHIR = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}
LIMIT = Settings().max_bundle_entries


def _transaction(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _post(client: httpx.Client, entries: list[dict[str, Any]]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("", json=_transaction(entries), headers=FHIR, timeout=600)
    return response, time.monotonic() - started


def test_a_transaction_of_deletes_of_unknown_ids_at_the_limit_is_not_a_500(
    client: httpx.Client,
) -> None:
    tag = uuid.uuid4().hex[:8]
    entries = [
        {"request": {"method": "DELETE", "url": f"Patient/gone-{tag}-{i}"}} for i in range(LIMIT)
    ]
    response, _ = _post(client, entries)
    assert response.status_code == 200, response.text[:500]
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"204 No Content"}


def test_transactions_of_put_patch_and_delete_at_the_limit(client: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"big-{tag}-{i}" for i in range(LIMIT)]

    puts = [
        {
            "resource": {"resourceType": "Patient", "id": id, "active": True},
            "request": {"method": "PUT", "url": f"Patient/{id}"},
        }
        for id in ids
    ]
    response, put_seconds = _post(client, puts)
    assert response.status_code == 200, response.text[:500]
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"201 Created"}

    ops = [{"op": "replace", "path": "/active", "value": False}]
    binary = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(ops).encode()).decode(),
    }
    patches = [
        {"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{id}"}} for id in ids
    ]
    response, patch_seconds = _post(client, patches)
    assert response.status_code == 200, response.text[:500]
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"200 OK"}
    for id in (ids[0], ids[-1]):
        patched = client.get(f"Patient/{id}").json()
        assert patched["active"] is False and patched["meta"]["versionId"] == "2"

    deletes = [{"request": {"method": "DELETE", "url": f"Patient/{id}"}} for id in ids]
    response, delete_seconds = _post(client, deletes)
    assert response.status_code == 200, response.text[:500]
    assert {e["response"]["status"] for e in response.json()["entry"]} == {"204 No Content"}
    for id in (ids[0], ids[-1]):
        assert client.get(f"Patient/{id}").status_code == 410
    print(
        f"{LIMIT} entries: PUT {put_seconds:.1f} s, PATCH {patch_seconds:.1f} s, "
        f"DELETE {delete_seconds:.1f} s"
    )
