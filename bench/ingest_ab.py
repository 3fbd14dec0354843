"""This checkout's write against another revision's, in alternating rounds: each round runs
`bench.ingest_cost` once with the revision's `src` first on PYTHONPATH (exported with `git
archive`) and once with this checkout's, each on its own scratch database (so each side
has its own schema and migrations), and the figures per resource are summed per side.

    .venv/bin/python -m bench.ingest_ab --baseline main [--rounds 4] [--members 24]

Separate processes, not interleaved Bundles: use it for changes that cannot be switched on
and off inside one process (schema, statements). The rounds alternate, so a change in the
machine's load falls on both sides.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_FIGURES = (
    "server_us_per_resource",
    "postgres_us_per_resource",
    "wal_bytes_per_resource",
    "statements_per_bundle",
    "rows_per_resource_total",
)


def _export(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            "--format=tar",
            revision,
            "src",
            "profiles",
            "migrations",
        ],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _one(src: Path, members: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{ROOT}")
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_cost", "--members", str(members), "--side", "same"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    out = done.stdout
    result: dict[str, Any] = json.loads(out[out.index("{") :])["0:same"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="a git revision")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--members", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sides = {"baseline": _export(args.baseline, Path(folder)), "this": ROOT / "src"}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, src in sides.items():
                runs[name].append(_one(src, args.members))
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        resources = sum(r["resources"] for r in results)
        summary[name] = {
            figure: round(sum(r[figure] * r["resources"] for r in results) / resources, 2)
            for figure in _FIGURES
        }
        summary[name]["server_us_per_resource_each_round"] = [
            r["server_us_per_resource"] for r in results
        ]
        summary[name]["postgres_us_per_resource_each_round"] = [
            r["postgres_us_per_resource"] for r in results
        ]
        summary[name]["rows_per_resource"] = results[-1]["rows_per_resource"]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
