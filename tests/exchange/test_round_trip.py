"""A whole server exported (`$export` at system level) and imported into a fresh one
(`cmfhir import` of every file of the export): the same resources come back, type by type,
with no line refused and no reference left dangling — the server's own content too
(R4B SubscriptionTopics in an R4 import, which were refused before)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.conftest import _new_database

from cmfhir.app import open_context
from cmfhir.commands.exchange import import_paths
from cmfhir.config import Settings
from cmfhir.exchange.export.worker import ExportWorker
from cmfhir.interactions import process_bundle
from cmfhir.interactions.content import CONTENT_DIR, load_content
from cmfhir.interactions.context import FhirContext
from cmfhir.store.export_jobs import ExportJobs

BASE = "http://localhost/fhir"


@pytest.fixture
def fresh_database(admin_url: str) -> Iterator[str]:
    with _new_database(admin_url) as url:
        yield url


def _member_bundle(n: int) -> dict[str, Any]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {"resourceType": "Patient", "name": [{"family": f"Trip{n}"}]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": patient},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": patient},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
        ],
    }


async def _fresh_server(settings: Settings) -> None:
    """What a server does at its first start: the database made, its content loaded."""
    async with open_context(settings) as ctx:
        await load_content(ctx, settings.profiles_dir / CONTENT_DIR)


async def _held(ctx: FhirContext) -> dict[tuple[str, str], dict[str, Any]]:
    """Every live resource, without what the server stamps on each version."""
    async with ctx.store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT resource_type, id, CAST(content AS text) FROM resource WHERE NOT deleted")
        )
        held = {}
        for kind, id, content in rows:
            resource = json.loads(content)
            meta = resource.pop("meta", {})
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            if meta:
                resource["meta"] = meta
            held[(kind, id)] = resource
    return held


def _per_type(held: dict[tuple[str, str], Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, _ in held:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


async def test_export_all_then_import_into_a_fresh_server(
    scratch_database: str, fresh_database: str, tmp_path: Path
) -> None:
    source = Settings(database_url=scratch_database)
    target = Settings(database_url=fresh_database)
    await _fresh_server(source)
    await _fresh_server(target)
    async with open_context(source) as ctx:
        for n in range(3):
            await process_bundle(ctx, _member_bundle(n), base=BASE)
        jobs = ExportJobs(ctx.store.engine)
        job_id = uuid.uuid4().hex
        await jobs.create(job_id, f"{BASE}/$export", {"level": "system"}, {"kind": "open"})
        assert await ExportWorker(ctx, tmp_path, expiry_s=60).run_once()
        job = await jobs.get(job_id)
        assert job is not None and job.manifest is not None, job
        exported = await _held(ctx)
    assert job.manifest["error"] == []
    files = [tmp_path / job_id / item["name"] for item in job.manifest["output"]]
    assert "SubscriptionTopic" in {item["type"] for item in job.manifest["output"]}

    async with open_context(target) as ctx:
        # As `cmfhir import` of every file does: references checked once all are in, the
        # lines read and validated in another process.
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as validators:
            done = await import_paths(ctx, files, batch=50, base=BASE, validators=validators)
        for path, progress, dangling in done:
            errors = path.with_name(path.name + ".errors.ndjson")
            refused = errors.read_text() if errors.exists() else ""
            assert (progress.refused, dangling, refused) == (0, 0, ""), path.name
        imported = await _held(ctx)

    assert _per_type(imported) == _per_type(exported)
    assert imported == exported
