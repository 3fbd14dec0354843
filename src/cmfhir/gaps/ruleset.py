"""The rules the engine runs and their configuration: `RULES` from gaps/rules/ (one module
per rule, each with `CODE` and `evaluate(snapshot, as_of, config) -> list[Gap]`) and the
thresholds gaps/config.py reads from profiles/care-gaps.json. Tests pass their own."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cmfhir.gaps.config import load_config
from cmfhir.gaps.model import Gap, MemberSnapshot

__all__ = ["Rule", "RuleSet", "load_ruleset"]


class Rule(Protocol):
    CODE: str

    def evaluate(self, snapshot: MemberSnapshot, as_of: datetime, config: Any) -> Sequence[Gap]: ...


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: Sequence[Rule] = ()
    config: Any = None
    codes: frozenset[str] = field(default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(r.CODE for r in self.rules))


def load_ruleset(profiles_dir: Path, module: str = "cmfhir.gaps.rules") -> RuleSet:
    """The `RULES` of `module` (the care-gap rules unless a test names its own) with the
    thresholds of profiles/care-gaps.json."""
    rules: Sequence[Rule] = importlib.import_module(module).RULES
    return RuleSet(tuple(rules), load_config(profiles_dir / "care-gaps.json"))
