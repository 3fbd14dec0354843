"""The rule of the multi-process sweep test: one open gap per member. An evaluation waits
(up to a minute) until two processes have evaluated members, so that a sweep in several
processes surely shares its members between them whatever the machine's load. Each
evaluating process leaves a file named by its pid in CMFHIR_TEST_SWEEP_DIR."""

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


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    seen = Path(os.environ["CMFHIR_TEST_SWEEP_DIR"])
    (seen / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(seen.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return [Gap(CODE, "", "open-gap", f"One gap per member, as of {as_of.date()}")]


RULES = [SimpleNamespace(CODE=CODE, READS=READS, evaluate=evaluate)]
