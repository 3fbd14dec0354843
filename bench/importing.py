"""Import scenario: the export's NDJSON files loaded back with `cmfhir import` (a process of
its own against the same database, the server and its workers running; every line a
`PUT Type/id`, validated, indexed and versioned like any write, made ready in
`--validators` processes, its default), timed, beside the ingest rate of the same run.

Ingest creates resources, so the import does too: before the clock starts, every member
resource's id (and every reference to it) is given a prefix, so that the lines are new
resources of the same kind and size rather than second versions of those exported. The
server's own definitions (resources with a canonical `url`) keep their ids: they are
imported as new versions, as a real re-import would. `bench/import_cost.py` compares the
CPU per resource of import and ingest in one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.server import Server

__all__ = ["run_import"]


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _renamed(value: Any, prefix: str, kept: set[str]) -> Any:
    if isinstance(value, dict):
        out = {k: _renamed(v, prefix, kept) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref.count("/") == 1 and ":" not in ref and ref not in kept:
            kind, id = ref.split("/")
            out["reference"] = f"{kind}/{prefix}{id}"
        return out
    if isinstance(value, list):
        return [_renamed(v, prefix, kept) for v in value]
    return value


def renamed_copies(files: Path, out: Path, prefix: str) -> list[Path]:
    """The export's files with every resource that has no canonical `url` given a new id
    (`prefix` + its id), the references to them changed alike."""
    paths = sorted(files.glob("*.ndjson"))
    kept: set[str] = set()
    for path in paths:
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    resource = orjson.loads(line)
                    if "url" in resource:
                        kept.add(f"{resource['resourceType']}/{resource['id']}")
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        copy = out / path.name
        with path.open("rb") as source, copy.open("wb") as target:
            for line in source:
                if not line.strip():
                    continue
                resource = _renamed(orjson.loads(line), prefix, kept)
                if f"{resource['resourceType']}/{resource['id']}" not in kept:
                    resource["id"] = prefix + resource["id"]
                target.write(orjson.dumps(resource) + b"\n")
        copies.append(copy)
    return copies


def run_import(server: Server, files: Path, ingest_rate: float | None) -> dict[str, Any]:
    paths = renamed_copies(files, files.with_name(files.name + "-import"), "i")
    resources = sum(_lines(p) for p in paths)
    env = dict(os.environ, CMFHIR_DATABASE_URL=server.database_url, CMFHIR_LOG_LEVEL="warning")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cmfhir", "import", "--quiet", *map(str, paths)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    rate = round(resources / seconds) if seconds else 0
    figures: dict[str, Any] = {
        "resources": resources,
        "files": len(paths),
        "seconds": round(seconds, 2),
        "resources_per_second": rate,
        "exit_code": done.returncode,
        "summary": done.stdout.strip().splitlines()[-3:],
    }
    if ingest_rate:
        figures["percent_of_ingest"] = round(100 * rate / ingest_rate, 1)
    return figures
