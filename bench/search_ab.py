"""CPU per search in one process, for A/B comparisons of two checkouts: the application
called as an ASGI server calls it (no client, no sockets; `bench/request_cost.py`'s
`asgi_` measurements) over the embedded PostgreSQL of a `bench.request_cost` data
directory, for each of the 9 questions of the search scenario (`bench/queries.py`), a
mix of them in turn, pages of 50 with and without `_include` / `_revinclude`, and one
search called as an interaction by a principal that sees everything and by a care manager
(whose every statement carries the access predicate).

    PYTHONPATH=<checkout>/src python -m bench.search_ab DIR [--requests 200] [--rounds 2]
        [--audit off|on] [--profile N] [--only name,...] [--out F.json]

Run it alternately with each checkout's `src` first on PYTHONPATH (the bench package is
this one's). Each figure is the process's CPU (`time.process_time`) per request, garbage
collection paused, after 10 requests to warm caches and prepared statements; PostgreSQL's
CPU is not in it. `--profile N` prints a cProfile of each measurement instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.caseload import make_staff
from bench.headers import client_headers
from bench.probe import stored_ids
from bench.queries import QUERIES, build_samples
from bench.request_cost import (
    RoundTrips,
    _interaction_calls,
    _load_if_empty,
    _measure_calls,
    _paths,
    _profiled,
)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _sink(message: Any) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"answered {message['status']}")


def _asgi_call(app: Any, url: str) -> Callable[[], Awaitable[None]]:
    """One GET of `url` (path and query) straight to the application; the answer must be
    200."""
    path, _, query = url.partition("?")
    headers = [(k.lower().encode(), v.encode()) for k, v in client_headers().items()]
    headers.append((b"host", b"cost"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("cost", 80),
        "app": app,
    }

    async def run() -> None:
        await app(dict(scope), _receive, _sink)

    return run


_PAGES = ("episodes_50", "episodes_50_include", "patients_50", "patients_50_revinclude")
# `EpisodeOfCare?care-manager=X` called as an interaction (no HTTP), as a principal that
# sees everything and as that care manager (`user/*.rs`: the access predicate in the SQL).
_INTERACTIONS = ("interaction_search_open", "interaction_search_care_manager")


def _mix(paths: dict[str, list[str]]) -> list[str]:
    """The 9 questions in turn, each with its next sample."""
    lists = [paths[q.name] for q in QUERIES]
    longest = max(len(x) for x in lists)
    return [x[n % len(x)] for n in range(longest) for x in lists]


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from cmfhir.app import create_app
    from cmfhir.config import Settings

    args.seed = 1
    await _load_if_empty(args, url)
    settings = Settings(
        database_url=url, data_dir=args.data_dir, auth="off", workers=False,
        audit=args.audit == "on",
    )  # fmt: skip
    app = create_app(settings)
    staff = make_staff(args.members)
    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        ids = await stored_ids(url)
        samples = await build_samples(url, staff, ids, args.members, 1)
        paths = _paths(samples, ids)
        paths["mix"] = _mix(paths)
        names = [q.name for q in QUERIES] + ["mix", *_PAGES, *_INTERACTIONS]
        if args.only:
            names = args.only.split(",")
        with RoundTrips() as trips:
            for round_ in range(args.rounds):
                for name in names:
                    if name in _INTERACTIONS:
                        calls = _interaction_calls(app.state.fhir, name, ids, staff.care_managers)
                    else:
                        calls = [_asgi_call(app, p) for p in paths[name]]
                    with _profiled(name, args.profile):
                        row = await _measure_calls(calls, args.requests, trips)
                    out.setdefault(name, []).append(row)
                    print(f"{round_} {name:38s} {json.dumps(row)}", flush=True)
    for name, rows in out.items():
        mean = sum(r["cpu_ms_mean"] for r in rows) / len(rows)
        out[name] = {"rounds": rows, "cpu_ms_mean": round(mean, 3)}
    for name, against in (("episodes_50_include", "episodes_50"),
                          ("patients_50_revinclude", "patients_50")):  # fmt: skip
        if name in out and against in out:
            ratio = out[name]["cpu_ms_mean"] / out[against]["cpu_ms_mean"]
            out[name]["ratio_to_without"] = round(ratio, 2)
    for name, row in out.items():
        extra = f"  ({row['ratio_to_without']}x)" if "ratio_to_without" in row else ""
        print(f"{name:38s} {row['cpu_ms_mean']:7.3f} ms{extra}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.search_ab")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--audit", choices=("on", "off"), default="off")
    parser.add_argument("--only", default="")
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cmfhir.store.database import embedded_url

    url = embedded_url(args.data_dir.resolve())
    result = asyncio.run(_run(args, url))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
