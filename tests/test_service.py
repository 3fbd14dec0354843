"""Running cmfhir as a service: the probes (`/healthz`, `/readyz`, also with the database
stopped or its schema elsewhere), CORS for browser apps, `/openapi.json` off by default, and
the command's help."""

from __future__ import annotations

import asyncio
import re
import time
import warnings
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.config import Settings
from cmfhir.store.database import async_url
from serving import private_dir, run_cmfhir

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' runtime-dir warning at import
    import pgserver
    from pgserver._commands import pg_ctl

FHIR = {"Content-Type": "application/fhir+json"}
APP = "https://care.example.org"


def _root(base: str) -> str:
    return base.removesuffix("/fhir")


def _poll(http: httpx.Client, url: str, status: int, seconds: float = 30) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = http.get(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


# -- probes -----------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_outside_fhir(base: str) -> None:
    alive = httpx.get(_root(base) + "/healthz")
    assert alive.status_code == 200
    assert alive.json() == {"status": "ok"}
    ready = httpx.get(_root(base) + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    assert ready.headers["Cache-Control"] == "no-store"
    assert httpx.get(base + "/healthz").status_code == 404


def test_readyz_is_503_while_the_database_is_stopped(
    settings: Settings, start_server: type
) -> None:
    with private_dir() as scratch:
        _readyz_while_stopped(settings, start_server, scratch / "pg")


def _readyz_while_stopped(settings: Settings, start_server: type, pgdata: Path) -> None:
    database = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    own = settings.model_copy(update={"database_url": database.get_uri()})
    try:
        with start_server(own) as server, httpx.Client(base_url=server.base, timeout=30) as http:
            root = _root(server.base)
            pid = http.post("Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
            assert http.get(f"{root}/readyz").status_code == 200

            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=database.system_user)

            down = http.get(f"{root}/readyz")
            assert down.status_code == 503
            assert down.json() == {"status": "unavailable", "reason": "database unavailable"}
            assert down.headers["Retry-After"]
            assert http.get(f"{root}/healthz").status_code == 200, "the process is alive"

            database.ensure_postgres_running()

            assert _poll(http, f"{root}/readyz", 200).status_code == 200
            # Reads alone (no write to trip SQLAlchemy's own disconnect handling) recover too.
            assert _poll(http, f"Patient/{pid}", 200).status_code == 200
    finally:
        database.cleanup()


async def _set_revision(url: str, revision: str | None) -> str:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).one()
            if revision is not None:
                await conn.execute(
                    text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
                )
            return str(current[0])
    finally:
        await engine.dispose()


def test_readyz_is_503_when_the_schema_is_not_at_this_release(
    settings: Settings, start_server: type, scratch_database: str
) -> None:
    own = settings.model_copy(update={"database_url": scratch_database})
    with start_server(own) as server, httpx.Client(timeout=30) as http:
        url = _root(server.base) + "/readyz"
        assert http.get(url).status_code == 200
        head = asyncio.run(_set_revision(scratch_database, "9999_from_a_newer_release"))

        newer = http.get(url)

        assert newer.status_code == 503
        assert newer.json()["reason"] == "database schema is not at this release's migration"
        asyncio.run(_set_revision(scratch_database, head))
        assert http.get(url).status_code == 200


# -- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_is_off_by_default(base: str) -> None:
    assert Settings().openapi is False
    response = httpx.get(_root(base) + "/openapi.json")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# -- CORS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cors_base(settings: Settings, start_server: type) -> object:
    with start_server(
        settings.model_copy(update={"cors_origins": f" {APP} , https://b.example"})
    ) as s:
        yield s.base


def _preflight(base: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        f"{base}/Patient",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, if-none-exist, "
            "if-match, prefer, x-request-id",
        },
    )


def test_preflight_from_an_allowed_origin(cors_base: str) -> None:
    response = _preflight(cors_base, APP)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {
        "authorization",
        "content-type",
        "if-match",
        "if-none-exist",
        "if-none-match",
        "if-modified-since",
        "prefer",
        "x-request-id",
    } <= allowed
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_preflight_from_a_refused_origin(cors_base: str) -> None:
    response = _preflight(cors_base, "https://evil.example")
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers
    plain = httpx.get(f"{cors_base}/metadata", headers={"Origin": "https://evil.example"})
    assert plain.status_code == 200
    assert "Access-Control-Allow-Origin" not in plain.headers


def test_cross_origin_create_exposes_location_and_etag(cors_base: str) -> None:
    created = httpx.post(
        f"{cors_base}/Patient",
        json={"resourceType": "Patient"},
        headers={**FHIR, "Origin": APP},
    )
    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "ETag", "Content-Location", "Last-Modified"} <= exposed


def test_any_origin_with_a_star(settings: Settings, start_server: type) -> None:
    with start_server(settings.model_copy(update={"cors_origins": "*"})) as server:
        response = _preflight(server.base, "https://anywhere.example", "GET")
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_no_cross_origin_access_unless_configured(base: str) -> None:
    response = httpx.get(f"{base}/metadata", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in _preflight(base, APP).headers


# -- help ---------------------------------------------------------------------------------------


def _options(help_text: str) -> dict[str, str]:
    """Each option of an argparse help text with its description (the lines that follow)."""
    options: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            options[current] = line
        elif current and line.startswith("   "):
            options[current] += " " + line.strip()
        else:
            current = None
    return options


@pytest.mark.parametrize("command", ["serve", "migrate", "reindex", "check"])
def test_help_describes_every_option_with_its_default(command: str, tmp_path: Path) -> None:
    done = run_cmfhir(None, tmp_path, command, "--help")
    assert done.returncode == 0, done.stderr
    assert "CMFHIR_" in done.stdout, "the help points at the environment settings"
    options = _options(done.stdout)
    assert "-h" in options
    for option, described in options.items():
        if option == "-h":
            continue
        assert "(default: " in described, f"{command} {option} has no default: {described}"


def test_serve_help_names_its_defaults(tmp_path: Path) -> None:
    done = run_cmfhir(None, tmp_path, "serve", "--help")
    options = _options(done.stdout)
    assert "(default: 127.0.0.1)" in options["--host"]
    assert "(default: 8080)" in options["--port"]
    assert "(default: 1)" in options["--workers"]


# -- connections cut by the database ------------------------------------------------------------


async def _terminate_backends(url: str) -> int:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            killed = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'cmfhir' "
                    "AND pid <> pg_backend_pid()"
                )
            )
            return len(killed.all())
    finally:
        await engine.dispose()


def test_reads_recover_when_the_database_cuts_every_connection(
    settings: Settings, start_server: type, scratch_database: str
) -> None:
    """Idle pooled connections told by the server to go (57P01) while reads keep coming:
    503 at worst, never 500, and reads alone bring the pool back."""
    own = settings.model_copy(update={"database_url": scratch_database})
    with start_server(own) as server:
        pid = httpx.post(
            f"{server.base}/Patient", json={"resourceType": "Patient"}, headers=FHIR
        ).json()["id"]

        async def reads(http: httpx.AsyncClient) -> list[int]:
            answers = await asyncio.gather(*(http.get(f"Patient/{pid}") for _ in range(8)))
            return [answer.status_code for answer in answers]

        async def rounds() -> list[int]:
            statuses: list[int] = []
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
                statuses += await reads(http)  # fill the pool
                for _ in range(10):
                    await _terminate_backends(scratch_database)
                    statuses += await reads(http)
            return statuses

        statuses = asyncio.run(rounds())
        assert set(statuses) <= {200, 503}, statuses
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert _poll(http, f"Patient/{pid}", 200, 10).status_code == 200
