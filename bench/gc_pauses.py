"""`--server-gc log|freeze`: the server's garbage-collection pauses, per worker. The server
runs with `bench/gcprobe` first on its PYTHONPATH (see its sitecustomize.py); `freeze` also
calls gc.freeze() in each worker once it has started, to show what that would change."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

__all__ = ["GC_MODES", "gc_env", "summarize_gc"]

GC_MODES = ("log", "freeze")
PROBE_DIR = Path(__file__).with_name("gcprobe")
FREEZE_AFTER_S = 8.0  # the server answers within a few seconds of starting


def gc_env(log_dir: Path, mode: str) -> dict[str, str]:
    """Environment for `cmfhir serve` that loads the probe and logs into `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(PROBE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "CMFHIR_BENCH_GC_DIR": str(log_dir)}
    if mode == "freeze":
        env["CMFHIR_BENCH_GC_FREEZE_S"] = str(FREEZE_AFTER_S)
    return env


def _worker(path: Path) -> dict[str, Any]:
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    frozen = None
    for line in path.read_text().splitlines():
        if line.startswith("# frozen"):
            frozen = int(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        _, generation, pause_ms, _ = line.split()
        pauses.setdefault(int(generation), []).append(float(pause_ms))
    full = sorted(pauses[2])
    return {
        "frozen_objects": frozen,
        "gen1_collections": len(pauses[1]),
        "gen2_collections": len(full),
        "gen2_pause_median_ms": round(statistics.median(full), 1) if full else None,
        "gen2_pause_max_ms": round(full[-1], 1) if full else None,
        "gc_pause_total_s": round(sum(sum(v) for v in pauses.values()) / 1000, 2),
    }


def summarize_gc(log_dir: Path) -> dict[str, Any]:
    """Per worker: collections of each generation logged, full-collection pauses."""
    return {path.stem: _worker(path) for path in sorted(log_dir.glob("gc-*.log"))}
