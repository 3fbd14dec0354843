"""The rules the engine runs and their configuration: `RULES` from gaps/rules/ (one module
per rule, each with `CODE`, `READS` and `evaluate(snapshot, as_of, config) -> list[Gap]`)
and the thresholds gaps/config.py reads from profiles/care-gaps.json. Tests pass their own.

`READS` names the resource types a rule looks at (in the member's snapshot, or followed by
reference). The engine reads only the types some rule reads (plus its own: `ENGINE_READS`),
and re-evaluates a member only when a change touches one of them. A rule without `READS`
is taken to read everything."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cmfhir.gaps.config import load_config
from cmfhir.gaps.model import Gap, MemberSnapshot

__all__ = ["ENGINE_READS", "SHARED_TYPES", "Rule", "RuleSet", "load_ruleset"]

# What the engine reads itself: the Patient (a member whose Patient is gone is left alone),
# the stored DetectedIssues (reconciled with what the rules compute) and what names the
# care manager stamped on open gaps (EpisodeOfCare.careManager, CareTeam participants).
ENGINE_READS = frozenset({"Patient", "DetectedIssue", "EpisodeOfCare", "CareTeam"})

# Types outside the Patient compartment that a member's resources refer to: read by
# reference, never queued for (a change to a Practitioner concerns no member).
SHARED_TYPES = frozenset(
    {"Practitioner", "PractitionerRole", "Organization", "Location", "Medication"}
)


class Rule(Protocol):
    CODE: str

    def evaluate(self, snapshot: MemberSnapshot, as_of: datetime, config: Any) -> Sequence[Gap]: ...


def _reads(rule: Any) -> frozenset[str] | None:
    declared: Collection[str] | None = getattr(rule, "READS", None)
    return None if declared is None else frozenset(declared)


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: Sequence[Rule] = ()
    config: Any = None
    codes: frozenset[str] = field(default=frozenset())
    # The types the engine reads for a member: every rule's `READS` and `ENGINE_READS`;
    # None when a rule declares nothing (everything is read).
    reads: frozenset[str] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(r.CODE for r in self.rules))
        declared = [_reads(r) for r in self.rules]
        reads: frozenset[str] | None = None
        if all(d is not None for d in declared):
            reads = ENGINE_READS.union(*(d for d in declared if d is not None))
        object.__setattr__(self, "reads", reads)

    def triggered_by(self, resource_type: str) -> bool:
        """Whether a change to a resource of this type can change a member's gaps."""
        return self.reads is None or resource_type in self.reads

    @property
    def compartment_types(self) -> frozenset[str] | None:
        """The types to read from members' compartments (None: every type)."""
        return None if self.reads is None else self.reads - SHARED_TYPES

    @property
    def shared_types(self) -> frozenset[str]:
        """The shared types to follow references to."""
        return SHARED_TYPES if self.reads is None else self.reads & SHARED_TYPES


def load_ruleset(profiles_dir: Path, module: str = "cmfhir.gaps.rules") -> RuleSet:
    """The `RULES` of `module` (the care-gap rules unless a test names its own) with the
    thresholds of profiles/care-gaps.json."""
    rules: Sequence[Rule] = importlib.import_module(module).RULES
    return RuleSet(tuple(rules), load_config(profiles_dir / "care-gaps.json"))
