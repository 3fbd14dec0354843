"""The access log and the no-PHI rule, on `cmfhir serve` as run in production: a recognizable
name and birth date go through every interaction with logging at DEBUG, and neither appears
anywhere in the server's output or in the embedded PostgreSQL's own log."""

from __future__ import annotations

import json
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import private_dir, serve

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' runtime-dir warning at import
    import pgserver
    from pgserver._commands import pg_ctl

NAME = "Zyxwquorn"
BIRTH = "1957-03-14"
FHIR = {"Content-Type": "application/fhir+json"}
MRN = f"urn:test:mrn|{NAME}-MRN"


def _patient(**more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test:mrn", "value": f"{NAME}-MRN"}],
        "name": [{"family": NAME, "given": ["Ada"]}],
        "birthDate": BIRTH,
        **more,
    }


@dataclass
class Run:
    responses: list[httpx.Response] = field(default_factory=list)
    output: str = ""
    postgres_log: str = ""

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.splitlines() if line.strip()]

    def access(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["logger"] == "cmfhir.access"]


def _interactions(http: httpx.Client, sent: list[httpx.Response]) -> None:
    def go(method: str, url: str, expect: int | tuple[int, ...], **kwargs: Any) -> httpx.Response:
        response = http.request(method, url, **kwargs)
        sent.append(response)
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in expected, f"{method} {url}: {response.text}"
        return response

    pid = go("POST", "Patient", 201, json=_patient(), headers=FHIR).json()["id"]
    go("GET", f"Patient/{pid}", 200)
    go("GET", f"Patient/{pid}/_history/1", 200)
    found = go("GET", "Patient", 200, params={"name": NAME, "birthdate": BIRTH})
    assert found.json()["total"] == 1
    go("GET", "Patient", 200, params={"family:exact": NAME, "identifier": MRN})
    go(
        "POST",
        "Patient/_search",
        200,
        content=f"name={NAME}&birthdate={BIRTH}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    updated = _patient(id=pid, gender="female")
    go("PUT", f"Patient/{pid}", 200, json=updated, headers=FHIR)
    go(
        "PATCH",
        f"Patient/{pid}",
        200,
        json=[{"op": "replace", "path": "/birthDate", "value": "1957-03-15"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    go(
        "POST",
        "Patient",
        200,  # matched: not created again
        json=_patient(),
        headers={**FHIR, "If-None-Exist": f"family={NAME}&birthdate=1957-03-15"},
    )
    go("PUT", f"Patient?identifier={MRN}", 200, json=_patient(), headers=FHIR)
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6b2c8a8e-58a4-4f2b-9b9c-2f3a0d7c1e11",
                "resource": _patient(),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={MRN}",
                },
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"{NAME} weight"},
                    "subject": {
                        "reference": "urn:uuid:6b2c8a8e-58a4-4f2b-9b9c-2f3a0d7c1e11",
                        "display": NAME,
                    },
                    "effectiveDateTime": BIRTH,
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    go("POST", "", 200, json=transaction, headers=FHIR)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient?name={NAME}&birthdate={BIRTH}"}},
            {
                "resource": _patient(birthDate=f"{NAME}-{BIRTH}"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": f"Patient/{NAME}-404"}},
        ],
    }
    go("POST", "", 200, json=batch, headers=FHIR)
    go("GET", f"Patient/{pid}/_history", 200)
    go("GET", "Patient/_history", 200)
    go("GET", "_history", 200)
    go("GET", f"Patient/{pid}/Observation", 200, params={"code:text": NAME})
    # Bad requests whose answers quote what was sent.
    echoed = [
        go("POST", "Patient", 400, json=_patient(birthDate=f"{NAME}-{BIRTH}"), headers=FHIR),
        go("POST", "Patient", 400, json={**_patient(), NAME: BIRTH}, headers=FHIR),
        go(
            "POST", "Patient", 400, content=f'{{"resourceType": "Patient", "{NAME}": ', headers=FHIR
        ),
        go("GET", "Patient", 400, params={"birthdate": f"{NAME}{BIRTH}"}),
        go("GET", f"Patient/{pid}", 400, params={"_elements": f"{NAME}.{BIRTH}"}),
        go("PUT", f"Patient/{NAME}-{BIRTH}", 400, json=_patient(id="other"), headers=FHIR),
    ]
    assert any(NAME in response.text for response in echoed), "nothing echoed: a weak test"
    go("GET", "Patient", (200, 400), params={NAME: BIRTH})
    go("GET", "Patient", 200, params={"name": NAME, "_sort": "birthdate", "_count": "1"})
    # A client-chosen id that holds the name, and a 404 on another.
    go("PUT", f"Patient/{NAME}-1957", 201, json=_patient(id=f"{NAME}-1957"), headers=FHIR)
    go("GET", f"Patient/{NAME}-1957", 200)
    go("DELETE", f"Patient/{NAME}-1957", (200, 204))
    go("GET", f"Patient/{NAME}-1957", 410)
    go("GET", f"Patient/{NAME}{BIRTH}", 404)
    go("GET", f"{NAME}/{BIRTH}", 404)
    go("GET", "Patient", 200, params={"name": NAME}, headers={"X-Request-Id": "trace-42"})
    go("GET", "metadata", 200, headers={"X-Request-Id": f"{NAME} {BIRTH}"})


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with private_dir() as workdir:
        yield _phi_run(workdir)


def _phi_run(workdir: Path) -> Run:
    result = Run()
    env = {"CMFHIR_LOG_LEVEL": "debug", "CMFHIR_LOG_FORMAT": "json"}
    with serve(None, workdir, env=env) as served, httpx.Client(base_url=served.base) as http:
        _interactions(http, result.responses)
        code, _ = served.stop(signal.SIGTERM)
        assert code == 0, served.output()
        result.output = served.output()
    result.postgres_log = (workdir / "data" / "pg" / "log").read_text(errors="replace")
    return result


def test_no_name_or_birth_date_in_any_log(run: Run) -> None:
    assert len(run.responses) > 30
    for text in (run.output, run.postgres_log):
        assert NAME.lower() not in text.lower()
        assert BIRTH not in text and "1957-03-15" not in text and "19570314" not in text


def test_every_line_is_a_json_object(run: Run) -> None:
    levels = {line["level"] for line in run.lines()}
    assert "debug" in levels, "the server did not log at DEBUG"
    for line in run.lines():
        assert {"time", "level", "logger", "request_id", "message"} <= set(line)


def test_one_access_line_per_request(run: Run) -> None:
    # Everything sent, plus the harness's GET /fhir/metadata polls until the server answered.
    access = [line for line in run.access() if line["path"] != "/fhir/metadata"]
    assert len(access) == len([r for r in run.responses if r.url.path != "/fhir/metadata"])


def test_access_line_fields(run: Run) -> None:
    search = next(r for r in run.responses if r.request.method == "GET" and r.url.query)
    line = next(
        entry for entry in run.access() if entry["request_id"] == search.headers["X-Request-Id"]
    )
    assert line["method"] == "GET"
    assert line["path"] == "/fhir/Patient?name=&birthdate="
    assert line["status"] == 200
    assert line["bytes"] == len(search.content)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["client"] is None and line["user"] is None
    assert line["time"].endswith("Z")
    paths = {entry["path"] for entry in run.access()}
    assert "/fhir/Patient/{id}" in paths
    assert "/fhir/Patient?identifier=" in paths


def test_request_id_is_echoed_when_sane_and_made_otherwise(run: Run) -> None:
    traced = next(r for r in run.responses if r.request.headers.get("X-Request-Id") == "trace-42")
    assert traced.headers["X-Request-Id"] == "trace-42"
    assert any(entry["request_id"] == "trace-42" for entry in run.access())
    odd = run.responses[-1]
    assert odd.headers["X-Request-Id"] != odd.request.headers["X-Request-Id"]
    assert len(odd.headers["X-Request-Id"]) == 32
    ids = [r.headers["X-Request-Id"] for r in run.responses]
    assert len(set(ids)) == len(ids)


def test_uvicorn_access_log_is_off(run: Run) -> None:
    assert not [line for line in run.lines() if line["logger"] == "uvicorn.access"]
    assert '" 200' not in run.output  # uvicorn's `"GET / HTTP/1.1" 200` format


def test_repeated_database_warnings_are_rate_limited() -> None:
    with private_dir() as scratch:
        _rate_limited(scratch)


def _rate_limited(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    database = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    # Requests only: the background workers, which also find the database gone and log it
    # (rate-limited the same way), would add their own windows of warnings.
    env = {
        "CMFHIR_LOG_REPEAT_LIMIT": "3",
        "CMFHIR_LOG_REPEAT_INTERVAL_S": "2",
        "CMFHIR_WORKERS": "false",
        "CMFHIR_EXPORT_WORKER": "false",
    }
    try:
        with (
            serve(database.get_uri(), tmp_path, env=env) as served,
            httpx.Client(base_url=served.base, timeout=30) as http,
        ):
            pid = http.post("Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=database.system_user)
            statuses = [http.get(f"Patient/{pid}").status_code for _ in range(60)]
            assert set(statuses) == {503}
            time.sleep(2.5)
            http.get(served.base.removesuffix("/fhir") + "/healthz")
            served.stop(signal.SIGTERM)
            output = served.output()
    finally:
        database.cleanup()
    warnings_ = [line for line in output.splitlines() if " WARNING cmfhir.store" in line]
    templates: dict[str, int] = {}
    for line in warnings_:
        if "similar messages suppressed" not in line:
            message = line.split("] ", 1)[1].split(":")[0]
            templates[message] = templates.get(message, 0) + 1
    assert templates and max(templates.values()) <= 3, warnings_
    suppressed = [line for line in warnings_ if "similar messages suppressed in 2 s" in line]
    assert suppressed, output
    counted = sum(int(line.split("] ", 1)[1].split()[0]) for line in suppressed)
    assert counted + sum(templates.values()) >= 60
