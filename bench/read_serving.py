"""Server CPU per read over loopback, one ASGI server (or server setting) against another:
every variant serves at once over the same embedded PostgreSQL; each round drives `GET
Type/id` at each in turn with wrk at a few connections, and reports the CPU seconds the
serving process and PostgreSQL's processes used per 10,000 reads (user + system, from the
kernel), with the medians over the rounds. On a loaded machine CPU per request moves far
less than throughput or latency; it still falls as throughput rises (fewer wake-ups per
read), so compare rounds of like throughput.

    python -m bench.read_serving DIR [--variants uvicorn,granian] [--rounds 10]
        [--seconds 3] [--connections 4] [--log-level warning] [--stored]
        [--src A=PATH --src B=PATH --variants uvicorn@A,uvicorn@B] [--out F.json]

DIR is a `bench.request_cost` directory (its caseload loaded there once). Variants, each one
process, no background workers, audit off:

- `uvicorn`: as `cmfhir serve` runs it (httptools under `cmfhir.connections`'
  protocol, uvloop), uvicorn's access log off;
- `uvicorn-plain`: uvicorn's own httptools protocol, without cmfhir's;
- `uvicorn-asyncio`: as `uvicorn`, on asyncio's own event loop;
- `granian`: granian's ASGI server, one worker (`pip install granian` first: it is not a
  dependency of cmfhir).

`SERVER@LABEL` runs a variant on the checkout `--src LABEL=PATH` names (A against B).
`--stored` answers reads from memory (`bench.read_stored`). The wrk client's CPU is not
counted. `--log-level info` writes the access log (to DIR/serve-*.log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.cpu_split import cpu_seconds
from bench.load import run_load
from bench.probe import stored_ids
from bench.server import free_port

_PYTHON = sys.executable
# `{app}`: the application's factory (`--stored`: reads from memory).
_VARIANTS: dict[str, list[str]] = {
    "uvicorn": [
        "-m", "uvicorn", "{app}", "--factory", "--http",
        "cmfhir.connections:GuardedHttpProtocol", "--no-access-log",
    ],
    "uvicorn-plain": [
        "-m", "uvicorn", "{app}", "--factory", "--http", "httptools", "--no-access-log",
    ],
    "uvicorn-asyncio": [
        "-m", "uvicorn", "{app}", "--factory", "--http",
        "cmfhir.connections:GuardedHttpProtocol", "--loop", "asyncio", "--no-access-log",
    ],
    "granian": [
        "-m", "granian", "--interface", "asgi", "--factory", "{app}", "--workers", "1",
    ],
}  # fmt: skip


def _tree(pid: int) -> list[int]:
    try:
        parent = psutil.Process(pid)
        return [parent.pid, *(c.pid for c in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _postgres_pids(data_dir: Path) -> list[int]:
    postmaster = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    return _tree(postmaster)


def _start(variant: str, port: int, url: str, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        CMFHIR_DATABASE_URL=url,
        CMFHIR_DATA_DIR=str(args.data_dir / "serve"),
        CMFHIR_AUTH="off",
        CMFHIR_AUDIT="false",
        CMFHIR_WORKERS="false",
        CMFHIR_POOL_SIZE="8",
        CMFHIR_LOG_LEVEL=args.log_level,
    )
    server, _, label = variant.partition("@")
    if label:  # the server run on another checkout's src/
        env["PYTHONPATH"] = os.pathsep.join([str(args.src[label]), str(Path.cwd())])
    app = "bench.read_stored:create_app" if args.stored else "cmfhir.app:create_app"
    command = [_PYTHON, *(a.replace("{app}", app) for a in _VARIANTS[server])]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = (args.data_dir / f"serve-{variant.replace('@', '-')}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{variant} exited {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=2).is_success:
                return process
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{variant} not ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        for pid in reversed(_tree(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)


def _measure(
    process: subprocess.Popen[bytes], port: int, args: argparse.Namespace, paths: list[str]
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/fhir"
    pg_before = {pid: cpu_seconds([pid]) for pid in _postgres_pids(args.data_dir)}
    pids = _tree(process.pid)
    serve_before = cpu_seconds(pids)
    result = run_load(base, paths, args.connections, args.seconds)
    serve = cpu_seconds(pids) - serve_before
    pg_after = {pid: cpu_seconds([pid]) for pid in _postgres_pids(args.data_dir)}
    postgres = sum(after - pg_before.get(pid, 0.0) for pid, after in pg_after.items())
    reads = max(1, result["requests"])
    return {
        "reads": result["requests"],
        "errors": result["errors"],
        "per_second": result["per_second"],
        "p99_ms": result["p99_ms"],
        "serve_s_per_10k": round(10_000 * serve / reads, 3),
        "postgres_s_per_10k": round(10_000 * postgres / reads, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_serving")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--variants", default="uvicorn,granian")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--stored", action="store_true", help="reads from memory, no I/O")
    parser.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a checkout's src/: variant SERVER@LABEL runs on it (A against B)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    args.src = {
        label: Path(path).resolve() for label, _, path in (s.partition("=") for s in args.src)
    }
    variants = args.variants.split(",")
    unknown = {v.partition("@")[0] for v in variants} - set(_VARIANTS)
    unknown |= {v.partition("@")[2] for v in variants if "@" in v} - set(args.src)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {sorted(_VARIANTS)}")
    from cmfhir.store.database import embedded_url

    url = embedded_url(args.data_dir)
    ids = asyncio.run(stored_ids(url))
    paths = [f"Patient/{i}" for i in ids["Patient"][:500]]
    paths += [f"Encounter/{i}" for i in ids["Encounter"][:500]]
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    # Every variant serves at once (each idle while another is measured), so the rounds
    # interleave closely: many short runs, their median, against the machine's other load.
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for variant in variants:
            port = free_port()
            servers[variant] = (_start(variant, port, url, args), port)
            # Warm caches and prepared statements.
            run_load(f"http://127.0.0.1:{port}/fhir", paths, args.connections, 2.0)
        for n in range(args.rounds):
            order = variants if n % 2 == 0 else variants[::-1]
            for variant in order:
                process, port = servers[variant]
                row = _measure(process, port, args, paths)
                row["at"] = time.strftime("%H:%M:%S")
                row["load"] = round(os.getloadavg()[0], 1)
                rows[variant].append(row)
                print(f"round {n + 1} {variant} {json.dumps(row)}", flush=True)
    finally:
        for process, _ in servers.values():
            _stop(process)
    summary = {
        variant: {
            key: round(statistics.median(r[key] for r in found), 3)
            for key in ("serve_s_per_10k", "postgres_s_per_10k", "per_second", "p99_ms")
        }
        for variant, found in rows.items()
    }
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"rounds": rows, "mean": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
