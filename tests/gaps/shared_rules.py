"""The rule of the multi-process sweep test: one open gap per member. A process's first
evaluation waits (25 s at most: less than the engine's 30-s lease, so that no member is
leased again while its evaluation waits) until two processes have evaluated members, so
that a sweep in several processes shares its members between them even when the machine
is slow to start the others. Each evaluating process leaves a file named by its pid in
CMFHIR_TEST_SWEEP_DIR."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cmfhir.gaps.model import Gap, MemberSnapshot

CODE = "shared-sweep"
READS = frozenset({"Patient"})
_waited: list[bool] = []


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    seen = Path(os.environ["CMFHIR_TEST_SWEEP_DIR"])
    (seen / str(os.getpid())).touch()
    if not _waited:
        _waited.append(True)
        deadline = time.monotonic() + 25
        while len(list(seen.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return [Gap(CODE, "", "open-gap", f"One gap per member, as of {as_of.date()}")]


RULES = [SimpleNamespace(CODE=CODE, READS=READS, evaluate=evaluate)]
