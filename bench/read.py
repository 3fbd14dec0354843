"""Scenario 2, read: `GET Patient/{id}` and `GET Encounter/{id}` under 1, 16 and 64
connections (https://hl7.org/fhir/R4B/http.html#read), ids drawn from what ingest created."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

from bench.cpu_split import CpuMeter
from bench.load import run_load

__all__ = ["CONNECTIONS", "run_read"]

CONNECTIONS = (1, 16, 64)
_SAMPLE = 5000


def read_paths(ids: dict[str, list[str]], seed: int) -> Iterator[tuple[str, list[str]]]:
    """Per kind read (Patient, then Encounter), the sample of `Type/id` paths its phases
    read, drawn alike for a given seed."""
    rng = random.Random(f"read:{seed}")
    for kind in ("Patient", "Encounter"):
        known = ids.get(kind, [])
        if known:
            yield kind, [f"{kind}/{rid}" for rid in rng.sample(known, min(_SAMPLE, len(known)))]


def run_read(
    base_url: str,
    ids: dict[str, list[str]],
    duration_s: float,
    seed: int,
    cpu: CpuMeter | None = None,
) -> list[dict[str, Any]]:
    """One row per interaction and connection count; with `cpu`, each row's CPU split."""
    rows = []
    for kind, paths in read_paths(ids, seed):
        for connections in CONNECTIONS:
            with cpu() if cpu else nullcontext({}) as split:
                result = run_load(base_url, paths, connections, duration_s)
            rows.append({"interaction": f"GET {kind}/{{id}}", **result, "cpu": split})
    return rows
