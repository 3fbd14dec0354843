"""NDJSON import (`cmfhir import` and the asynchronous `$import`): valid lines stored and
indexed, bad lines reported per line in OperationOutcome NDJSON, references checked at the
end (not per batch), inputs from the import directory or an allowed http(s) host, and an
interrupted import (the command, or a `$import` job whose worker died) resumed without
storing a line twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.serving import cmfhir_env

from cmfhir.app import open_context
from cmfhir.commands.exchange import import_file
from cmfhir.config import Settings
from cmfhir.exchange.import_worker import ImportWorker
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.store.export_jobs import ImportJobs


def _lines(tag: str) -> list[str]:
    patient = {"resourceType": "Patient", "id": f"imp-{tag}", "name": [{"family": f"Imp{tag}"}]}
    observation = {
        "resourceType": "Observation",
        "id": f"obs-{tag}",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/imp-{tag}"},
    }
    dangling = {
        "resourceType": "Observation",
        "id": f"dangling-{tag}",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/nobody-{tag}"},
    }
    return [
        json.dumps(observation),  # 1: refers to line 3 (deferred check)
        "{not json",  # 2
        json.dumps(patient),  # 3
        json.dumps({"resourceType": "Patient", "id": f"bad-{tag}", "gender": "sometimes"}),  # 4
        json.dumps({"resourceType": "Nonsense", "id": "x"}),  # 5
        "",  # 6: blank
        json.dumps(dangling),  # 7
        *(
            json.dumps({"resourceType": "Patient", "id": f"p{n}-{tag}", "active": True})
            for n in range(5)
        ),  # 8-12
    ]


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _get(client: httpx.Client, url: str) -> httpx.Response:
    """A request from an async test (the server runs in its own thread)."""
    return client.get(url)


def _errors(path: Path) -> list[dict[str, Any]]:
    text = path.with_name(path.name + ".errors.ndjson").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def test_import_reports_bad_lines_and_stores_the_rest(
    settings: Settings, client: httpx.Client, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    path = _write(tmp_path, _lines(tag))
    async with open_context(settings) as ctx:
        progress, dangling = await import_file(ctx, path, batch=2, base="http://x/fhir")
    assert (progress.stored, progress.refused, dangling) == (8, 3, 1)
    errors = _errors(path)
    where = [e["issue"][0]["expression"][0] for e in errors]
    assert where[:3] == ["line 2", "line 4", "line 5"]
    assert where[3] == f"Observation/dangling-{tag}"
    assert _get(client, f"Observation/obs-{tag}").status_code == 200
    found = _get(client, f"Observation?subject=Patient/imp-{tag}").json()
    assert [e["resource"]["id"] for e in found["entry"]] == [f"obs-{tag}"]  # indexed
    assert _get(client, f"Patient/bad-{tag}").status_code == 404
    # Done once: running it again changes nothing.
    async with open_context(settings) as ctx:
        again, _ = await import_file(ctx, path, batch=2, base="http://x/fhir")
    assert again.stored == 8
    assert _get(client, f"Patient/imp-{tag}").json()["meta"]["versionId"] == "1"


class Crash(Exception):
    pass


async def test_an_interrupted_import_resumes(
    settings: Settings, client: httpx.Client, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    lines = [
        json.dumps({"resourceType": "Patient", "id": f"r{n}-{tag}", "active": True})
        for n in range(20)
    ]
    path = _write(tmp_path, lines)
    read = 0

    def crash_midway(size: int) -> None:
        nonlocal read
        read += 1
        if read == 13:  # mid-way through the fourth batch of 3
            raise Crash

    async with open_context(settings) as ctx:
        with pytest.raises(Crash):
            await import_file(ctx, path, batch=3, base="http://x/fhir", advance=crash_midway)
        state = json.loads(path.with_name(path.name + ".import-state.json").read_text())
        assert state["lines_done"] == 12 and not state["complete"]
        progress, _ = await import_file(ctx, path, batch=3, base="http://x/fhir")
    assert progress.complete and progress.lines_done == 20 and progress.stored == 20
    for n in range(20):
        stored = _get(client, f"Patient/r{n}-{tag}").json()
        assert stored["meta"]["versionId"] == "1", n  # never written twice


def test_the_command_line(database_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    path = _write(tmp_path, _lines(tag))
    done = subprocess.run(
        [sys.executable, "-m", "cmfhir.cli", "import", str(path), "--quiet"],
        env=cmfhir_env(database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # some lines refused
    assert "8 stored, 3 refused, 1 dangling references" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "cmfhir.cli", "import", str(tmp_path / "nope.ndjson")],
        env=cmfhir_env(database_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert missing.returncode == 2


def _import_body(*urls: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            *({"name": "input", "part": [{"name": "url", "valueUri": url}]} for url in urls),
        ],
    }


ASYNC = {"Prefer": "respond-async"}


def _finished(client: httpx.Client, status_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (answer := client.get(status_url)).status_code == 202:
        assert answer.headers["X-Progress"] and answer.headers["Retry-After"]
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    manifest: dict[str, Any] = answer.json()
    return manifest


def _refused_lines(client: httpx.Client, manifest: dict[str, Any]) -> list[str]:
    [errors] = manifest["error"]
    assert errors["type"] == "OperationOutcome"
    lines = [json.loads(x) for x in client.get(errors["url"]).text.splitlines()]
    assert len(lines) == errors["count"]
    return [o["issue"][0]["expression"][0] for o in lines]


def test_import_operation(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    _write(tmp_path, _lines(tag))
    monkeypatch.setenv("CMFHIR_IMPORT_DIR", str(tmp_path))
    response = client.post("$import", json=_import_body("data.ndjson"), headers=ASYNC)
    assert response.status_code == 202, response.text
    manifest = _finished(client, response.headers["Content-Location"])
    assert manifest["output"] == [{"inputUrl": "data.ndjson", "count": 8, "refused": 3}]
    assert _refused_lines(client, manifest) == [
        "line 2",
        "line 4",
        "line 5",
        f"Observation/dangling-{tag}",
    ]
    assert client.get(f"Patient/imp-{tag}").status_code == 200
    assert client.get(f"Patient/bad-{tag}").status_code == 404


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (_import_body("data.ndjson"), {}, 400),  # no Prefer: respond-async
        (_import_body("../../etc/passwd"), ASYNC, 400),  # outside the import directory
        (_import_body("https://example.org/x.ndjson"), ASYNC, 400),  # not on the allow-list
        (_import_body("http://127.0.0.1:5432/x.ndjson"), ASYNC, 400),
        (_import_body("ftp://example.org/x.ndjson"), ASYNC, 400),
        ({"resourceType": "Parameters", "parameter": []}, ASYNC, 400),
    ],
    ids=["no-prefer", "outside", "remote", "loopback", "ftp", "no-input"],
)
def test_import_refusals(
    client: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    _write(tmp_path, _lines("refused"))
    monkeypatch.setenv("CMFHIR_IMPORT_DIR", str(tmp_path))
    response = client.post("$import", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert client.get("$import").status_code == 405


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server on loopback serving tmp_path (the import's remote source)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_import_from_an_allowed_url(
    client: httpx.Client, tmp_path: Path, served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    _write(tmp_path, _lines(tag))
    url = f"http://{served}/data.ndjson"
    refused = client.post("$import", json=_import_body(url), headers=ASYNC)
    assert refused.status_code == 400  # the default allow-list is empty
    monkeypatch.setenv("CMFHIR_IMPORT_ALLOW_HOSTS", served)
    missing = f"http://{served}/nothing.ndjson"
    response = client.post("$import", json=_import_body(url, missing), headers=ASYNC)
    assert response.status_code == 202, response.text
    manifest = _finished(client, response.headers["Content-Location"])
    assert [o["count"] for o in manifest["output"]] == [8, 0]
    where = _refused_lines(client, manifest)
    assert where == ["line 2", "line 4", "line 5", "input.url", f"Observation/dangling-{tag}"]
    assert client.get(f"Observation/obs-{tag}").status_code == 200


class Killed(BaseException):
    """The worker's process dies: nothing of the worker runs after it."""


class DiesAfterThreeBatches(ImportJobs):
    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.batches = 0

    async def checkpoint(
        self, id: str, state: dict[str, Any], progress: str, lease_s: int
    ) -> str | None:
        status = await super().checkpoint(id, state, progress, lease_s)
        self.batches += 1
        if self.batches == 3:
            raise Killed
        return status


async def _die_then_resume(settings: Settings, job_id: str, url: str, base: str) -> int:
    async with open_context(settings) as ctx:
        root = ExchangeSettings().import_work_dir
        jobs = ImportJobs(ctx.store.engine)
        async with ctx.store.engine.begin() as conn:
            # Created as a worker claimed it (so that the server's own worker leaves it).
            await conn.execute(
                text(
                    "INSERT INTO import_job (id, status, request, params, principal, attempts,"
                    " started_at, lease_until) VALUES (:id, 'in-progress', 'test',"
                    " CAST(:params AS jsonb), CAST(:principal AS jsonb), 1, now(),"
                    " now() + interval '1 hour')"
                ),
                {
                    "id": job_id,
                    "params": json.dumps({"inputs": [{"url": url, "http": url}], "base": base}),
                    "principal": json.dumps({"kind": "open"}),
                },
            )
        job = await jobs.get(job_id)
        assert job is not None
        dying = ImportWorker(
            ctx, root, export_root=root, expiry_s=60, batch=3,
            jobs=DiesAfterThreeBatches(ctx.store.engine),
        )  # fmt: skip
        with pytest.raises(Killed):
            await dying.run_job(job)
        state = await jobs.state(job_id)
        assert state is not None and state["lines_done"] == 9
        async with ctx.store.engine.begin() as conn:
            # Its lease runs out: the next worker takes it over.
            await conn.execute(
                text("UPDATE import_job SET lease_until = now() WHERE id = :id"), {"id": job_id}
            )
        await ImportWorker(ctx, root, export_root=root, expiry_s=60, batch=3).run_once()
        done = await jobs.get(job_id)
        assert done is not None
        return done.attempts


def test_an_interrupted_import_job_resumes(
    settings: Settings, client: httpx.Client, tmp_path: Path, served: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    lines = [
        json.dumps({"resourceType": "Patient", "id": f"k{n}-{tag}", "active": True})
        for n in range(20)
    ]
    _write(tmp_path, [*lines[:10], "{broken", *lines[10:]])
    job_id = uuid.uuid4().hex
    url = f"http://{served}/data.ndjson"
    base = str(client.base_url).rstrip("/")
    attempts = asyncio.run(_die_then_resume(settings, job_id, url, base))
    manifest = _finished(client, f"{base}/$import-status/{job_id}")
    assert attempts == 2
    assert manifest["output"] == [{"inputUrl": url, "count": 20, "refused": 1}]
    assert _refused_lines(client, manifest) == ["line 11"]  # reported once
    for n in range(20):
        stored = client.get(f"Patient/k{n}-{tag}").json()
        assert stored["meta"]["versionId"] == "1", n  # never written twice


async def test_lines_whose_references_need_resolving(
    settings: Settings, client: httpx.Client, tmp_path: Path
) -> None:
    """A line with a conditional reference is resolved as a transaction entry's is (the
    one resource it matches), one with a `urn:uuid:` reference naming no line is refused;
    the lines around them are stored in batches as usual."""
    tag = uuid.uuid4().hex[:8]
    patient = {
        "resourceType": "Patient",
        "id": f"cond-{tag}",
        "identifier": [{"system": "urn:test:mrn", "value": tag}],
    }

    def observation(n: int, reference: str) -> str:
        return json.dumps(
            {
                "resourceType": "Observation",
                "id": f"cond-obs{n}-{tag}",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": reference},
            }
        )

    lines = [
        json.dumps(patient),
        observation(1, f"Patient?identifier=urn:test:mrn|{tag}"),  # 2
        observation(2, f"urn:uuid:{uuid.uuid4()}"),  # 3
        observation(3, f"Patient/cond-{tag}"),
    ]
    path = _write(tmp_path, lines)
    async with open_context(settings) as ctx:
        progress, dangling = await import_file(ctx, path, batch=10, base="http://x/fhir")
    assert (progress.stored, progress.refused, dangling) == (3, 1, 0)
    assert [e["issue"][0]["expression"][0] for e in _errors(path)] == ["line 3"]
    found = _get(client, f"Observation/cond-obs1-{tag}").json()
    assert found["subject"]["reference"] == f"Patient/cond-{tag}"
