"""The import's bulk path: lines made ready where they are read (validated, stamped, indexed)
and new resources COPYed (store/bulk.py) are stored as any write stores them — content and
meta as served, index rows, history, outbox event — while a line naming a resource that
exists becomes its next version, a Type/id taken meanwhile refuses the whole batch, and
`$import`'s worker reads its lines in validating processes."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.errors import Conflict
from cmfhir.exchange.import_validators import default_validators, definitions
from cmfhir.exchange.import_worker import import_worker
from cmfhir.exchange.import_writer import check_line
from cmfhir.exchange.importing import ImportProgress, deferred, import_lines
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.store.bulk import create_many


def _observation(tag: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"bulk-obs{n}-{tag}",
        "meta": {"tag": [{"system": "urn:test:bulk", "code": tag}], "source": "urn:src"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/bulk-{tag}"},
        "effectiveDateTime": f"2024-03-0{n + 1}",
        "valueQuantity": {"value": 71.50, "unit": "kg"},
    }


def _get(client: httpx.Client, url: str) -> httpx.Response:
    """A request from an async test (the server runs in its own thread)."""
    return client.get(url)


def _put(client: httpx.Client, url: str, json: dict[str, Any]) -> httpx.Response:
    return client.put(url, json=json)


def _raw(resource: dict[str, Any]) -> bytes:
    # 71.50 written with its trailing zero, as a client would send it.
    return json.dumps(resource).replace("71.5", "71.50").encode()


async def test_ready_lines_are_stored_as_any_write(
    settings: Settings, client: httpx.Client
) -> None:
    tag = uuid.uuid4().hex[:8]
    patient = {"resourceType": "Patient", "id": f"bulk-{tag}", "name": [{"family": "Bulk"}]}
    lines = [_raw(patient), *(_raw(_observation(tag, n)) for n in range(3))]
    async with open_context(settings) as ctx:
        checked = [check_line("4.0", n, raw, definitions(ctx)) for n, raw in enumerate(lines, 1)]
        assert all(line.ready is not None and line.resource is None for line in checked)
        progress = await import_lines(ctx, lines, ImportProgress(), base="http://x/fhir")
    assert (progress.stored, progress.refused) == (4, 0)
    stored = _get(client, f"Observation/bulk-obs1-{tag}")
    assert stored.status_code == 200
    body = stored.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["tag"] == [{"system": "urn:test:bulk", "code": tag}]
    assert body["meta"]["source"] == "urn:src"
    assert b'"value":71.50' in stored.content.replace(b" ", b"")  # precision kept
    expected = {**_observation(tag, 1), "meta": body["meta"]}
    assert body == expected
    # Indexed: by tag, by date, by reference, by code; in the member's compartment.
    for query in (
        f"Observation?_tag=urn:test:bulk|{tag}",
        f"Observation?subject=Patient/bulk-{tag}&code=http://loinc.org|29463-7",
        f"Patient/bulk-{tag}/Observation",
    ):
        assert len(_get(client, query).json().get("entry", [])) == 3, query
    dated = _get(client, f"Observation?_tag=urn:test:bulk|{tag}&date=2024-03-02").json()
    assert [e["resource"]["id"] for e in dated["entry"]] == [f"bulk-obs1-{tag}"]
    history = _get(client, f"Observation/bulk-obs1-{tag}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["1"]
    async with open_context(settings) as ctx, ctx.store.engine.connect() as conn:
        events = await conn.execute(
            text(
                "SELECT e.method, e.version, e.patient_id FROM event e JOIN resource r"
                " ON r.rid = e.rid WHERE r.resource_type = 'Observation' AND r.id = :id"
            ),
            {"id": f"bulk-obs1-{tag}"},
        )
        assert [tuple(row) for row in events] == [("create", 1, f"bulk-{tag}")]


async def test_a_line_naming_a_stored_resource_is_its_next_version(
    settings: Settings, client: httpx.Client
) -> None:
    tag = uuid.uuid4().hex[:8]
    first = _observation(tag, 0)
    patient = {"resourceType": "Patient", "id": f"bulk-{tag}"}
    async with open_context(settings) as ctx:
        await import_lines(
            ctx, [_raw(patient), _raw(first)], ImportProgress(), base="http://x/fhir"
        )
        changed = {**first, "status": "amended"}
        new = {**_observation(tag, 5), "id": f"bulk-new-{tag}"}
        progress = await import_lines(
            ctx, [_raw(changed), _raw(new)], ImportProgress(), base="http://x/fhir"
        )
    assert progress.stored == 2
    body = _get(client, f"Observation/bulk-obs0-{tag}").json()
    assert (body["meta"]["versionId"], body["status"]) == ("2", "amended")
    amended = _get(client, f"Observation?_tag=urn:test:bulk|{tag}&status=amended").json()
    assert [e["resource"]["id"] for e in amended["entry"]] == [f"bulk-obs0-{tag}"]
    assert _get(client, f"Observation/bulk-new-{tag}").json()["meta"]["versionId"] == "1"


async def test_a_batch_whose_name_was_taken_meanwhile_is_refused_whole(
    settings: Settings, client: httpx.Client
) -> None:
    """A name created by someone else after the import looked for it (past MAX_CLAIMS names
    none is claimed): the COPY fails on the unique key, 409, and nothing of it stays."""
    tag = uuid.uuid4().hex[:8]
    taken = {"resourceType": "Patient", "id": f"taken-{tag}", "active": True}
    other = {"resourceType": "Patient", "id": f"other-{tag}"}
    assert _put(client, f"Patient/taken-{tag}", json=taken).status_code == 201
    async with open_context(settings) as ctx:
        found = definitions(ctx)
        ready = [
            check_line("4.0", n, orjson.dumps(r), found).ready for n, r in ((1, other), (2, taken))
        ]
        writer = deferred(replace(ctx, principal=TRUSTED))
        with pytest.raises(Conflict):
            async with writer.store.transaction(principal=TRUSTED) as repo:
                await create_many(repo, [r for r in ready if r is not None])
    assert _get(client, f"Patient/other-{tag}").status_code == 404
    assert _get(client, f"Patient/taken-{tag}").json()["meta"]["versionId"] == "1"


def test_default_validators() -> None:
    assert [default_validators(cpus) for cpus in (1, 2, 3, 8)] == [1, 2, 3, 3]


async def test_the_import_worker_reads_lines_in_validating_processes(
    settings: Settings, client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    lines = [json.dumps({"resourceType": "Patient", "id": f"w{n}-{tag}"}) for n in range(5)]
    (tmp_path / "in.ndjson").write_text("\n".join(lines) + "\n")
    monkeypatch.delenv("CMFHIR_IMPORT_VALIDATORS", raising=False)
    monkeypatch.setenv("CMFHIR_IMPORT_WORK_DIR", str(tmp_path / "work"))
    async with open_context(settings) as ctx:
        worker = import_worker(ctx, ExchangeSettings())
        assert worker.validators == default_validators() >= 1
        job_id = uuid.uuid4().hex
        params = {"inputs": [{"url": "in.ndjson", "file": str(tmp_path / "in.ndjson")}]}
        async with ctx.store.engine.begin() as conn:
            # Created as a worker claimed it (so that the server's own worker leaves it).
            await conn.execute(
                text(
                    "INSERT INTO import_job (id, status, request, params, principal, attempts,"
                    " started_at, lease_until) VALUES (:id, 'in-progress', 'test',"
                    " CAST(:params AS jsonb), CAST(:principal AS jsonb), 1, now(),"
                    " now() + interval '1 hour')"
                ),
                {"id": job_id, "params": json.dumps(params), "principal": '{"kind": "open"}'},
            )
        claimed = await worker.jobs.get(job_id)
        assert claimed is not None
        try:
            await worker.run_job(claimed)
            assert worker.pool is not None  # the pool the lines were made ready in
        finally:
            worker.close()
        job = await worker.jobs.get(job_id)
    assert job is not None and job.status == "completed", job
    assert job.manifest is not None
    assert job.manifest["output"] == [{"inputUrl": "in.ndjson", "count": 5, "refused": 0}]
    assert _get(client, f"Patient/w4-{tag}").status_code == 200
