"""CPU and database round trips per read and per search, in one process: the application
is served through httpx's ASGI transport (no sockets, no uvicorn; the client's own CPU is
included) over an embedded PostgreSQL holding a caseload loaded through the same
application. The process's CPU time (`time.process_time`) per request moves far less with
other load on the machine than latency does, so two checkouts can be compared A against B
by running this alternately with each on PYTHONPATH (`--rounds`, interleaved by the caller).

    python -m bench.request_cost DIR [--members 300] [--requests 200] [--out F.json]
        [--auth off|system|user] [--audit on|off] [--only read_patient,...]

`--auth system` serves with CMFHIR_AUTH=smart and sends every request with one bearer
token of the built-in server (`system/*.cruds`, seeing everything); `--auth user` with a
care manager's `user/*.rs` token (every read narrowed by the access predicate). The
caseload is loaded with auth off first (the same DIR serves both).

DIR holds the embedded PostgreSQL (`DIR/pg`); the caseload is loaded on the first run and
kept. Round trips are counted at asyncpg's connection (every statement it sends, prepared
or not, and every COPY), so they include SQLAlchemy's own statements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.caseload import make_staff, member_bundle, staff_bundle
from bench.headers import client_headers
from bench.probe import stored_ids
from bench.queries import QUERIES, build_samples

_FHIR = {"Content-Type": "application/fhir+json"}


class RoundTrips:
    """Counts the statements asyncpg sends (patched at its Python entry points)."""

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        counter = self

        async def counted(*args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return await original(*args, **kwargs)

        self._undo.append((owner, name, original))
        setattr(owner, name, counted)

    def __enter__(self) -> RoundTrips:
        from asyncpg import connection, prepared_stmt

        # fetch/fetchrow/fetchval/execute with arguments go through `_execute`; an execute
        # without arguments is a simple query; SQLAlchemy runs prepared statements.
        self._wrap(connection.Connection, "_execute")
        self._wrap(prepared_stmt.PreparedStatement, "_PreparedStatement__bind_execute")
        original_execute = connection.Connection.execute
        counter = self

        async def execute(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:
                counter.count += 1
            return await original_execute(conn, query, *args, **kwargs)

        self._undo.append((connection.Connection, "execute", original_execute))
        connection.Connection.execute = execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)


async def _load(client: httpx.AsyncClient, members: int, seed: int) -> None:
    staff = make_staff(members)
    answer = await client.post("/fhir", json=staff_bundle(staff), headers=_FHIR)
    answer.raise_for_status()
    for index in range(members):
        answer = await client.post("/fhir", json=member_bundle(seed, index, staff), headers=_FHIR)
        if answer.status_code != 200:
            raise RuntimeError(f"member {index}: {answer.status_code} {answer.text[:300]}")


def _paths(samples: dict[str, list[Any]], ids: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {
        "read_patient": [f"/fhir/Patient/{i}" for i in ids["Patient"][:500]],
        "read_encounter": [f"/fhir/Encounter/{i}" for i in ids["Encounter"][:500]],
        "vread_patient": [f"/fhir/Patient/{i}/_history/1" for i in ids["Patient"][:500]],
    }
    for query in QUERIES:
        out[query.name] = [f"/fhir/{query.path(values)}" for values in samples[query.sample]]
    managers = [values[0] for values in samples["care_manager"]]
    base = "/fhir/EpisodeOfCare?care-manager=Practitioner/{0}&_count=50"
    out["episodes_50"] = [base.format(quote(m)) for m in managers]
    out["episodes_50_include"] = [
        base.format(quote(m)) + "&_include=EpisodeOfCare:patient" for m in managers
    ]
    # A page of 50 Patients, and the EpisodeOfCare of each.
    panels = [f"/fhir/Patient?gender={g}&_count=50" for g in ("female", "male")]
    out["patients_50"] = panels
    out["patients_50_revinclude"] = [f"{p}&_revinclude=EpisodeOfCare:patient" for p in panels]
    return out


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    # Collections fall on whichever request allocates; counted apart, they blur the A/B.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _measure(
    client: httpx.AsyncClient, paths: list[str], requests: int, trips: RoundTrips
) -> dict[str, Any]:
    for path in paths[:10]:  # warm caches and prepared statements
        (await client.get(path)).raise_for_status()
    costs: list[float] = []
    before_trips = trips.count
    with _no_gc():
        for n in range(requests):
            path = paths[n % len(paths)]
            started = time.process_time()
            answer = await client.get(path)
            costs.append(time.process_time() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    return {
        "cpu_ms_mean": round(1000 * statistics.fmean(costs), 3),
        "cpu_ms_median": round(1000 * statistics.median(costs), 3),
        "round_trips": (trips.count - before_trips) / requests,
    }


# Interactions called directly (no HTTP), as a principal that sees everything and as a
# care manager (a `user/` token whose every query carries the access predicate).
_INTERACTIONS = (
    "interaction_read_open",
    "interaction_read_care_manager",
    "interaction_search_open",
    "interaction_search_care_manager",
)


def _interaction_calls(
    ctx: Any, name: str, ids: dict[str, list[str]], managers: tuple[str, ...]
) -> list[Callable[[], Awaitable[Any]]]:
    from dataclasses import replace

    from cmfhir.auth.principal import Principal
    from cmfhir.interactions import read, search

    calls: list[Callable[[], Awaitable[Any]]] = []
    patients = ids["Patient"]
    for n, manager in enumerate(managers * 20):
        as_manager = replace(
            ctx,
            principal=Principal(
                "user", "bench", fhir_user=f"Practitioner/{manager}", scopes=("user/*.rs",)
            ),
        )
        who = as_manager if name.endswith("care_manager") else ctx
        if name.startswith("interaction_read"):
            # Member i has care manager i % managers (bench/caseload.py): one it may see.
            patient = patients[
                n % len(patients) // len(managers) * len(managers) + n % len(managers)
            ]
            calls.append(functools.partial(read, who, "Patient", patient))
        else:
            query = [("care-manager", f"Practitioner/{manager}")]
            calls.append(functools.partial(search, who, "EpisodeOfCare", query, base="x"))
    return calls


async def _measure_calls(
    calls: list[Callable[[], Awaitable[Any]]], requests: int, trips: RoundTrips
) -> dict[str, Any]:
    for call in calls[:10]:
        await call()
    costs: list[float] = []
    before_trips = trips.count
    with _no_gc():
        for n in range(requests):
            started = time.process_time()
            await calls[n % len(calls)]()
            costs.append(time.process_time() - started)
    return {
        "cpu_ms_mean": round(1000 * statistics.fmean(costs), 3),
        "cpu_ms_median": round(1000 * statistics.median(costs), 3),
        "round_trips": (trips.count - before_trips) / requests,
    }


async def _measure_asgi(
    app: Any, paths: list[str], headers: dict[str, str], requests: int, trips: RoundTrips
) -> dict[str, Any]:
    """The server's CPU alone: the application called as an ASGI server calls it (an
    `http` scope, one request message; the answer must be 200), without any client."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"host", b"cost"))

    def call(path: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": raw_headers,
                "client": ("127.0.0.1", 5000),
                "server": ("cost", 80),
                "app": app,
            }
            await app(scope, _receive, _sink)

        return run

    return await _measure_calls([call(path) for path in paths], requests, trips)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _sink(message: Any) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"answered {message['status']}")


async def _client_only(requests: int) -> dict[str, Any]:
    """What the client and the ASGI transport cost alone: the same httpx client asking an
    application that answers a read-sized body at once. Subtract it from a request's
    figure for the server's share."""
    body = b"x" * 1500

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/fhir+json"), (b"content-length", b"1500")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cost", headers=client_headers()
    ) as client:
        paths = [f"/fhir/Patient/{n}" for n in range(100)]
        return await _measure(client, paths, requests, RoundTrips())


def _bearer(args: argparse.Namespace, manager: str) -> dict[str, str]:
    """The Authorization header of a token the built-in server would issue: a backend
    client's `system/*.cruds` (`--auth system`) or a care manager's `user/*.rs`."""
    from cmfhir.auth.keys import SigningKeys
    from cmfhir.auth.tokens import issue_access_token

    user = args.auth == "user"
    issued = issue_access_token(
        SigningKeys(args.data_dir / "auth-keys"),
        issuer="http://cost/auth",
        audience="http://cost/fhir",
        client_id="bench",
        scope="user/*.rs" if user else "system/*.cruds system/cmfhir-sensitive.read",
        lifetime=3600,
        fhir_user=f"Practitioner/{manager}" if user else None,
    )
    return {"Authorization": f"Bearer {issued.token}"}


def _managed(ids: dict[str, list[str]], managers: int) -> dict[str, list[str]]:
    """The Patients the first care manager may read (member i has care manager
    i % managers, bench/caseload.py); their Encounters are not picked out, so with
    `--auth user` measure reads of Patients only (`--only read_patient`)."""
    return {"Patient": ids["Patient"][::managers], "Encounter": ids["Encounter"][:0]}


async def _load_if_empty(args: argparse.Namespace, url: str) -> None:
    """The caseload, loaded with auth off on the first run."""
    from cmfhir.app import create_app
    from cmfhir.config import Settings

    settings = Settings(database_url=url, data_dir=args.data_dir, auth="off", workers=False)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://cost", headers=client_headers()
        ) as client,
    ):
        if (await client.get("/fhir/Patient?_count=1&_total=accurate")).json()["total"] == 0:
            started = time.monotonic()
            await _load(client, args.members, args.seed)
            print(f"loaded {args.members} members in {time.monotonic() - started:.0f} s")


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from cmfhir.app import create_app
    from cmfhir.config import Settings

    await _load_if_empty(args, url)
    settings = Settings(
        database_url=url,
        data_dir=args.data_dir,
        auth="off" if args.auth == "off" else "smart",
        workers=False,
        audit=args.audit == "on",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    headers = client_headers()
    staff = make_staff(args.members)
    async with (
        app.router.lifespan_context(app),
        # As wrk sends: no Accept-Encoding, so no answer is compressed (bench/headers.py).
        httpx.AsyncClient(transport=transport, base_url="http://cost", headers=headers) as client,
    ):
        if args.auth != "off":  # the signing keys are made as the application starts
            headers.update(_bearer(args, staff.care_managers[0]))
            client.headers.update(headers)
        ids = await stored_ids(url)
        if args.auth == "user":
            ids = _managed(ids, len(staff.care_managers))
        samples = await build_samples(url, staff, ids, args.members, args.seed)
        paths = _paths(samples, ids)
        wanted = args.only.split(",") if args.only else ["client_only", *paths, *_INTERACTIONS]
        out: dict[str, Any] = {}
        with RoundTrips() as trips:
            for name in wanted:
                if name == "client_only":
                    out[name] = await _client_only(args.requests)
                    print(f"{name:40s} {json.dumps(out[name])}", flush=True)
                    continue
                if name in _INTERACTIONS:
                    calls = _interaction_calls(app.state.fhir, name, ids, staff.care_managers)
                    out[name] = await _measure_calls(calls, args.requests, trips)
                    print(f"{name:40s} {json.dumps(out[name])}", flush=True)
                    continue
                if name.startswith("asgi_"):
                    # asgi_read_patient: read_patient's paths, straight to the application.
                    with _profiled(name, args.profile):
                        out[name] = await _measure_asgi(
                            app, paths[name.removeprefix("asgi_")], headers, args.requests, trips
                        )
                    print(f"{name:40s} {json.dumps(out[name])}", flush=True)
                    continue
                if args.profile:
                    await _profile(client, paths[name], args.requests, name, args.profile)
                    continue
                out[name] = await _measure(client, paths[name], args.requests, trips)
                print(f"{name:40s} {json.dumps(out[name])}", flush=True)
    return out


@contextlib.contextmanager
def _profiled(name: str, top: int) -> Iterator[None]:
    """With `top`, cProfile (CPU time) over the block, printing that many functions."""
    if not top:
        yield
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        print(f"== {name}")
        stats = pstats.Stats(profiler).strip_dirs()
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)


async def _profile(
    client: httpx.AsyncClient, paths: list[str], requests: int, name: str, top: int
) -> None:
    """cProfile over `requests` requests: the functions with the most time, inclusive and
    own."""
    import cProfile
    import pstats

    for path in paths[:10]:
        await client.get(path)
    profiler = cProfile.Profile(time.process_time)  # CPU, not the waits
    with _no_gc():
        profiler.enable()
        for n in range(requests):
            await client.get(paths[n % len(paths)])
        profiler.disable()
    print(f"== {name}: {requests} requests")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cost")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated measurement names")
    parser.add_argument("--audit", choices=("on", "off"), default="on")
    parser.add_argument("--auth", choices=("off", "system", "user"), default="off")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--profile", type=int, default=0, help="cProfile instead, printing this many functions"
    )
    args = parser.parse_args()
    from cmfhir.store.database import embedded_url

    args.data_dir.mkdir(parents=True, exist_ok=True)
    url = embedded_url(args.data_dir.resolve())
    result = asyncio.run(_run(args, url))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
