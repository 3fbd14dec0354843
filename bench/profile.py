"""Optional sampling profile of the server workers during one scenario with py-spy
(`pip install py-spy`; not a project dependency), summarized as the functions where the
samples fall: self (the innermost frame) and inclusive (anywhere on the stack), and the
self samples grouped by layer (cmfhir, asyncpg, SQLAlchemy, validation, HTTP, ...)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["profiled", "py_spy", "summarize_profile"]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_MARKER = re.compile(r"^(thread \(0x[0-9A-Fa-f]+\)|process \d+:)")
# Layers by the file of the innermost Python frame (C code such as asyncpg's Cython protocol
# or uvloop counts towards the Python frame that called it). First match wins.
_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cmfhir", ("cmfhir/",)),
    ("asyncpg (protocol, Cython)", ("asyncpg/",)),
    ("SQLAlchemy (statements, compile, pool)", ("sqlalchemy/",)),
    ("validation (fhir.resources, pydantic)", ("fhir/resources/", "fhir_core/", "pydantic")),
    ("HTTP (uvicorn, starlette, fastapi)", ("uvicorn/", "starlette/", "fastapi/", "httptools")),
    ("event loop (uvloop, in C)", ("asyncio/runners.py",)),
    ("JSON (stdlib json)", ("json/",)),
)


def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter (a venv) or on PATH."""
    import sys

    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pids: list[int], out_dir: Path, label: str) -> Iterator[list[Path]]:
    """Record each pid (raw collapsed stacks) while the block runs."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [out_dir / f"{label}-{pid}.txt" for pid in pids]
    options = ["--format", "raw", "--rate", "200", "--nonblocking"]
    recorders = [
        subprocess.Popen(
            [executable, "record", "--pid", str(pid), *options, "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outputs, strict=True)
    ]
    try:
        yield outputs
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            recorder.wait(timeout=60)


def _frame(frame: str) -> str:
    """`func (path:line)` → `func (path)`, with site-packages and src prefixes trimmed."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"].rpartition("site-packages/")[2].rpartition("/src/")[2]
    return f"{match['func']} ({file})"


def _layer(frame: str) -> str:
    for name, markers in _LAYERS:
        if any(f"({marker}" in frame for marker in markers):
            return name
    return "other (stdlib, greenlet, typing, ...)"


def summarize_profile(files: list[Path], top: int = 20) -> dict[str, Any]:
    """Share of samples per function over all recorded files."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    per_process: Counter[str] = Counter()
    total = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            # With --threads/--subprocesses py-spy prefixes `thread (0x..)`/`process N:`; stacks
            # run in a greenlet (SQLAlchemy's async bridge) start at the greenlet's own frame.
            frames = [_frame(f) for f in stack.split(";") if not _MARKER.match(f)]
            if not frames:
                continue
            total += count
            per_process[path.stem] += count
            own[frames[-1]] += count
            layers[_layer(frames[-1])] += count
            for name in set(frames):
                inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    project = Counter({name: n for name, n in inclusive.items() if "(cmfhir/" in name})
    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(inclusive),
        "inclusive_cmfhir": share(project),
        "self_by_layer": share(layers),
        # Samples per worker (`<scenario>-<pid>`): a lopsided split means the load's
        # connections landed on one worker (uvicorn workers share one listening socket).
        "samples_per_process": {name: per_process[name] for name in sorted(per_process)},
    }
