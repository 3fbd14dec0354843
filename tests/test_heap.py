"""The server's garbage-collector settings once it has started (cmfhir.workers.settle_heap):
the start-up heap frozen, and full collections ten times rarer than Python's default, so a
bulk load does not re-scan what requests promoted every few Bundles (bench/README.md)."""

from __future__ import annotations

import gc

import httpx

from cmfhir.workers import GC_THRESHOLDS


def test_started_server_freezes_its_heap_and_collects_fully_less_often(
    client: httpx.Client,
) -> None:
    assert client.get("metadata").status_code == 200
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[2] > 10  # Python's default is 10
