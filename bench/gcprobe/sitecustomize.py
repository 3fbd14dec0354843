"""Loaded by the server's Python when the harness runs it with `--server-gc` (this directory
is put first on its PYTHONPATH). Only in uvicorn worker processes, and only when
CMFHIR_BENCH_GC_DIR is set: logs every generation-1/2 garbage collection, and any longer than
2 ms, as `time generation pause_ms collected` lines in DIR/gc-PID.log; with
CMFHIR_BENCH_GC_FREEZE_S, runs gc.collect() and gc.freeze() that many seconds after the
worker starts, so that later full collections skip the heap built at start-up. A
measurement aid of the harness, not part of cmfhir."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Any

_DIR = os.environ.get("CMFHIR_BENCH_GC_DIR")
_FREEZE_S = os.environ.get("CMFHIR_BENCH_GC_FREEZE_S")
_SLOW_S = 0.002


def _install(directory: str) -> None:
    path = os.path.join(directory, f"gc-{os.getpid()}.log")
    started = [0.0]

    def log(line: str) -> None:
        with open(path, "a") as handle:
            handle.write(line + "\n")

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        pause = time.perf_counter() - started[0]
        generation = info.get("generation", -1)
        if generation >= 1 or pause > _SLOW_S:
            log(f"{time.time():.3f} {generation} {pause * 1000:.2f} {info.get('collected', 0)}")

    def freeze() -> None:
        gc.collect()
        gc.freeze()
        log(f"# frozen {gc.get_freeze_count()} objects")

    log(f"# worker {os.getpid()} thresholds {gc.get_threshold()}")
    gc.callbacks.append(callback)
    if _FREEZE_S:
        timer = threading.Timer(float(_FREEZE_S), freeze)
        timer.daemon = True
        timer.start()


if _DIR and "--multiprocessing-fork" in sys.argv:
    _install(_DIR)
