"""The rules the engine runs and their configuration: `RULES` from gaps/rules/ (one module
per rule, each with `CODE` and `evaluate(snapshot, as_of, config) -> list[Gap]`) and the
thresholds gaps/config.py reads from profiles/care-gaps.json. Tests pass their own."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cmfhir.gaps.model import Gap, MemberSnapshot

__all__ = ["Rule", "RuleSet", "load_ruleset"]

log = logging.getLogger(__name__)


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
    """The `RULES` of `module` and their configuration (none, if the rules are not there)."""
    try:
        rules: Sequence[Rule] = importlib.import_module(module).RULES
    except (ImportError, AttributeError):
        log.warning("no care-gap rules found (%s.RULES); the engine finds no gaps", module)
        return RuleSet()
    config: Any = None
    loaders: Any = None
    try:
        loaders = importlib.import_module("cmfhir.gaps.config")
    except ImportError:
        log.warning("no care-gap configuration loader (cmfhir.gaps.config)")
    for name in ("load_config", "load"):
        loader = getattr(loaders, name, None)
        if callable(loader):
            config = loader(profiles_dir)
            break
    return RuleSet(tuple(rules), config)
