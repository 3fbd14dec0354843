"""A care-gap rule for the benchmark (`CMFHIR_GAP_RULES=bench.gap_probe`): every member with
an Encounter has one open gap citing their latest Encounter, so each member's ingest makes
exactly one DetectedIssue and its lag can be measured whatever the real rules find. It reads
the whole snapshot as a real rule would, but computes little: the sweep figures measure the
engine (queue, snapshot reads, reconciliation, writes), not the rules' own cost. It
declares the types the real rules read (`READS`), so the engine reads and queues as much
for it as for them."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules import RULES as REAL_RULES

CODE = "bench-probe"
READS = frozenset().union(*(rule.READS for rule in REAL_RULES))


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    encounters = sorted(
        (e for e in snapshot.of("Encounter") if e.get("id")),
        key=lambda e: str((e.get("period") or {}).get("start", "")),
    )
    if not encounters:
        return []
    latest = f"Encounter/{encounters[-1]['id']}"
    # Counted over the types it reads: a write of another type changes nothing here.
    count = sum(len(snapshot.of(kind)) for kind in sorted(READS))
    return [Gap(CODE, "", "open-gap", f"Benchmark probe over {count} resources", (latest,))]


RULES = [SimpleNamespace(CODE=CODE, READS=READS, evaluate=evaluate)]
