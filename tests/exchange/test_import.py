"""NDJSON import (`cmfhir import`): valid lines stored and indexed, bad lines reported per
line in OperationOutcome NDJSON, references checked at the end (not per batch), and an
interrupted import resumed without storing a line twice."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.serving import cmfhir_env

from cmfhir.app import open_context
from cmfhir.commands.exchange import import_file
from cmfhir.config import Settings


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


def test_import_operation(
    client: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    _write(tmp_path, _lines(tag))
    monkeypatch.setenv("CMFHIR_IMPORT_DIR", str(tmp_path))
    response = client.post("$import", json=_import_body("data.ndjson"))
    assert response.status_code == 200, response.text
    issues = response.json()["issue"]
    assert issues[0]["diagnostics"] == "data.ndjson: 8 stored, 3 refused"
    assert [i["expression"][0] for i in issues[1:]] == [
        "line 2",
        "line 4",
        "line 5",
        f"Observation/dangling-{tag}",
    ]
    assert client.get(f"Patient/imp-{tag}").status_code == 200
    # Only files under the import directory; not by GET.
    outside = client.post("$import", json=_import_body("../../etc/passwd"))
    assert outside.status_code == 400
    remote = client.post("$import", json=_import_body("https://example.org/x.ndjson"))
    assert remote.status_code == 400
    assert client.get("$import").status_code == 405
