"""Import scenario: the export's NDJSON files loaded back with `cmfhir import` (a process of
its own against the same database; every line a `PUT Type/id`, validated, indexed and
versioned like any write, validated in `--validators` processes, its default), timed,
beside the ingest rate of the same run. `bench/import_cost.py` compares the CPU per resource
of import and ingest in one process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.server import Server

__all__ = ["run_import"]


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def run_import(server: Server, files: Path, ingest_rate: float | None) -> dict[str, Any]:
    paths = sorted(files.glob("*.ndjson"))
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
