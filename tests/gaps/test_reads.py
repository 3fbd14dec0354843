"""The rules' `READS` declarations (gaps/ruleset.py), with no database: every type a rule
looks at is declared, and re-evaluating a member only when a change touches a declared
type, from a snapshot of the declared types only, leaves the same DetectedIssues as
re-evaluating the whole member after every write."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from cmfhir.gaps import detected_issue as di
from cmfhir.gaps.config import CareGapConfig, load_config
from cmfhir.gaps.engine import GapFeed, evaluate_member
from cmfhir.gaps.model import MemberSnapshot
from cmfhir.gaps.rules import RULES
from cmfhir.gaps.ruleset import ENGINE_READS, SHARED_TYPES, RuleSet
from cmfhir.store import Event, EventPosition

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.json"))
IDS = [f"{p.parent.name}/{p.stem}" for p in CASES]
# Types no rule reads (the caseload's Observations and Goals) and types of the audit trail.
UNRELATED = ("Observation", "Goal", "Provenance", "AuditEvent", "Flag")


@pytest.fixture(scope="module")
def config() -> CareGapConfig:
    return load_config()


class Recording:
    """A member snapshot that notes the types a rule asks for."""

    def __init__(self, snapshot: MemberSnapshot) -> None:
        self.patient_id = snapshot.patient_id
        self.resources = snapshot.resources
        self._snapshot = snapshot
        self.asked: set[str] = set()

    def of(self, resource_type: str) -> Sequence[Mapping[str, Any]]:
        self.asked.add(resource_type)
        return self._snapshot.of(resource_type)

    def get(self, reference: str) -> Mapping[str, Any] | None:
        self.asked.add(reference.partition("/")[0])
        return self._snapshot.get(reference)

    def derived(self, key: object, make: Callable[[], Any]) -> Any:
        return make()  # made each time: what it reads is noted for every rule asking


def _case(path: Path) -> tuple[list[dict[str, Any]], datetime]:
    case = json.loads(path.read_text())
    return [e["resource"] for e in case["bundle"]["entry"]], datetime.fromisoformat(case["as_of"])


def _snapshot(
    patient_id: str, resources: Collection[Mapping[str, Any]], types: Collection[str] | None
) -> MemberSnapshot:
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for resource in resources:
        if types is None or resource["resourceType"] in types:
            by_type.setdefault(resource["resourceType"], []).append(resource)
    return MemberSnapshot(patient_id, by_type)


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_each_rule_asks_only_for_the_types_it_declares(path: Path, config: CareGapConfig) -> None:
    resources, as_of = _case(path)
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    for rule in RULES:  # every rule on every case: more paths than the rule's own cases
        full = rule.evaluate(_snapshot(patient["id"], resources, None), as_of, config)
        recording = Recording(_snapshot(patient["id"], resources, None))
        rule.evaluate(cast(MemberSnapshot, recording), as_of, config)
        assert recording.asked <= rule.READS, (rule.CODE, recording.asked - rule.READS)
        narrowed = rule.evaluate(_snapshot(patient["id"], resources, rule.READS), as_of, config)
        assert narrowed == full, rule.CODE


def test_the_rule_set_reads_the_union_and_what_the_engine_needs(config: CareGapConfig) -> None:
    ruleset = RuleSet(RULES, config)  # type: ignore[arg-type]
    assert ruleset.reads is not None
    assert ruleset.reads >= ENGINE_READS
    for rule in RULES:
        assert ruleset.reads >= rule.READS
    assert "Observation" not in ruleset.reads and "Goal" not in ruleset.reads
    assert ruleset.compartment_types is not None
    assert not ruleset.compartment_types & SHARED_TYPES
    assert ruleset.shared_types <= SHARED_TYPES
    # A rule that declares nothing reads everything.
    undeclared = RuleSet([*RULES, type("R", (), {"CODE": "x", "evaluate": None})()], config)  # type: ignore[list-item]
    assert undeclared.reads is None and undeclared.triggered_by("Observation")


def _event(resource_type: str, origin: str | None = None) -> Event:
    return Event(
        EventPosition(1, 1),
        1,
        resource_type,
        "1",
        1,
        "create",
        "p",
        None,
        datetime.now(UTC),
        origin,
    )


def test_the_feed_skips_changes_no_rule_reads(config: CareGapConfig) -> None:
    feed = GapFeed(RuleSet(RULES, config))  # type: ignore[arg-type]
    for kind in ("Encounter", "Communication", "MedicationDispense", "DetectedIssue", "Patient"):
        assert feed.concerns(_event(kind)), kind
    for kind in UNRELATED:
        assert not feed.concerns(_event(kind)), kind
    assert not feed.concerns(_event("DetectedIssue", origin="gaps"))
    # With no rule set, only the audit trail and the engine's own writes are skipped.
    assert GapFeed().concerns(_event("Observation"))
    assert not GapFeed().concerns(_event("AuditEvent"))


class _Member:
    """One member's resources and stored DetectedIssues, as the engine would see them."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self.issues: dict[str, dict[str, Any]] = {}

    def evaluate(
        self,
        resources: Mapping[tuple[str, str], Mapping[str, Any]],
        ruleset: RuleSet,
        as_of: datetime,
        types: Collection[str] | None,
    ) -> None:
        snapshot = _snapshot(self.patient_id, [*resources.values(), *self.issues.values()], types)
        for written in evaluate_member(snapshot, as_of, ruleset):
            self.issues[written["id"]] = written


def _writes(
    rng: random.Random, pool: Sequence[dict[str, Any]], patient_id: str, count: int
) -> list[tuple[str, dict[str, Any]]]:
    """A random series of ("put" | "delete" | "acknowledge", resource): the case's
    resources written, changed, deleted and written again, beside writes of types no rule
    reads."""
    series: list[tuple[str, dict[str, Any]]] = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.25:
            kind = rng.choice(UNRELATED)
            series.append(
                (
                    "put",
                    {
                        "resourceType": kind,
                        "id": f"u{rng.randrange(3)}",
                        "status": "final",
                        "subject": {"reference": f"Patient/{patient_id}"},
                        "note": [{"text": str(n)}],
                    },
                )
            )
        elif roll < 0.35:
            series.append(("acknowledge", {}))
        elif pool:
            resource = copy.deepcopy(rng.choice(pool))
            if rng.random() < 0.25:
                series.append(("delete", resource))
                continue
            if rng.random() < 0.3 and "status" in resource:
                resource["status"] = rng.choice(
                    ["finished", "completed", "active", "cancelled", "entered-in-error", "noshow"]
                )
            series.append(("put", resource))
    return series


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_incremental_evaluation_equals_a_full_one_after_every_write(
    path: Path, config: CareGapConfig
) -> None:
    resources, as_of = _case(path)
    ruleset = RuleSet(RULES, config)  # type: ignore[arg-type]
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    shared = [r for r in resources if r["resourceType"] in SHARED_TYPES]
    pool = [r for r in resources if r["resourceType"] not in SHARED_TYPES | {"Patient"}]
    rng = random.Random(path.stem)
    for _ in range(3):
        store: dict[tuple[str, str], Mapping[str, Any]] = {
            (r["resourceType"], r["id"]): r for r in [patient, *shared]
        }
        full, incremental = _Member(patient["id"]), _Member(patient["id"])
        evaluated = 0
        for action, resource in _writes(rng, pool, patient["id"], 24):
            kind = resource.get("resourceType", "DetectedIssue")
            if action == "acknowledge":
                open_ = [i for i in full.issues.values() if di.gap_status(i) != "closed-gap"]
                if not open_:
                    continue
                chosen = rng.choice(open_)["id"]
                for member in (full, incremental):
                    issue = copy.deepcopy(member.issues[chosen])
                    issue["mitigation"] = [
                        *(issue.get("mitigation") or ()),
                        {"action": {"text": "Discussed with the member"}, "date": "2026-01-05"},
                    ]
                    member.issues[chosen] = issue
            elif kind == "DetectedIssue":
                for member in (full, incremental):
                    member.issues[resource["id"]] = copy.deepcopy(resource)
            elif action == "delete":
                store.pop((kind, resource["id"]), None)
            else:
                store[(kind, resource["id"])] = resource
            full.evaluate(store, ruleset, as_of, None)
            if ruleset.triggered_by(kind):
                evaluated += 1
                incremental.evaluate(store, ruleset, as_of, ruleset.reads)
            assert incremental.issues == full.issues, (action, kind)
        assert evaluated > 0 or not pool
