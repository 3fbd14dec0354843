"""The engine against the store: a member is evaluated again only when a change touches a
type some rule reads, and its snapshot holds only such types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.gaps.engine import GapEngine, GapFeed
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.ruleset import RuleSet, load_ruleset
from cmfhir.gaps.snapshot import read_snapshots
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in
from cmfhir.workers import OutboxConsumer

CODING = {"system": "http://loinc.org", "code": "8867-4"}


@pytest.fixture
async def ctx(scratch_database: str) -> AsyncIterator[FhirContext]:
    async with open_context(Settings(database_url=scratch_database)) as context:
        yield context


async def _write(ctx: FhirContext, *resources: dict[str, Any]) -> list[str]:
    async with ctx.store.transaction(principal=TRUSTED) as repo:
        return [(await create_in(ctx, repo, r))[0].id for r in resources]


def _of(kind: str, patient: str) -> dict[str, Any]:
    subject = {"reference": f"Patient/{patient}"}
    return {
        "Observation": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [CODING]},
            "subject": subject,
        },
        "Goal": {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": "Walk every day"},
            "subject": subject,
        },
        "Communication": {
            "resourceType": "Communication",
            "status": "completed",
            "subject": subject,
            "sent": "2026-11-02T10:00:00Z",
        },
        "Encounter": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T11:00:00Z"},
        },
        "EpisodeOfCare": {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "type": [
                {
                    "coding": [
                        {"system": "https://cmfhir.org/fhir/CodeSystem/program", "code": "tcm"}
                    ]
                }
            ],
            "patient": subject,
            "period": {"start": "2026-10-01"},
        },
    }[kind]


async def _evaluated_after(ctx: FhirContext, engine: GapEngine, feed: GapFeed, *writes: Any) -> int:
    """How many member evaluations the writes cause."""
    before = engine.evaluations
    if writes:
        await _write(ctx, *writes)
    await OutboxConsumer(ctx.store, feed).catch_up()
    await engine.drain()
    return engine.evaluations - before


async def test_only_changes_to_types_the_rules_read_evaluate_a_member(ctx: FhirContext) -> None:
    ruleset = load_ruleset(Settings().profiles_dir)
    engine, feed = GapEngine(ctx, ruleset), GapFeed(ruleset)
    (patient,) = await _write(ctx, {"resourceType": "Patient"})
    assert await _evaluated_after(ctx, engine, feed, _of("EpisodeOfCare", patient)) == 1
    # Observations and Goals: no rule reads them.
    unrelated = [_of("Observation", patient), _of("Goal", patient), _of("Observation", patient)]
    assert await _evaluated_after(ctx, engine, feed, *unrelated) == 0
    # A contact (qualifying contacts) and an encounter are read.
    assert await _evaluated_after(ctx, engine, feed, _of("Communication", patient)) == 1
    assert await _evaluated_after(ctx, engine, feed, _of("Encounter", patient)) == 1
    # Without the rule set the feed queues the member for anything but the audit trail.
    assert await _evaluated_after(ctx, engine, GapFeed(), _of("Goal", patient)) == 1


async def test_a_rule_set_reading_encounters_sees_and_follows_only_them(ctx: FhirContext) -> None:
    seen: list[set[str]] = []

    def encounters(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
        seen.append(set(snapshot.resources))
        found = [f"Encounter/{e['id']}" for e in snapshot.of("Encounter")]
        return [Gap("probe", "", "open-gap", "Seen", tuple(found))] if found else []

    ruleset = RuleSet([SimpleNamespace(CODE="probe", READS={"Encounter"}, evaluate=encounters)])  # type: ignore[list-item]
    engine, feed = GapEngine(ctx, ruleset), GapFeed(ruleset)
    (patient,) = await _write(ctx, {"resourceType": "Patient"})
    await _write(ctx, _of("Observation", patient), _of("Goal", patient))
    assert await _evaluated_after(ctx, engine, feed) == 1  # the Patient's creation
    assert await _evaluated_after(ctx, engine, feed, _of("Communication", patient)) == 0
    assert await _evaluated_after(ctx, engine, feed, _of("Encounter", patient)) == 1
    # The snapshots held the Patient, the engine's own types and Encounters, nothing else.
    assert seen[-1] == {"Patient", "Encounter"}
    assert all(not kinds & {"Observation", "Goal", "Communication"} for kinds in seen)


async def test_a_dispensed_medication_is_followed_by_reference(ctx: FhirContext) -> None:
    # The adherence and new-medication rules read a dispense's Medication (its code and
    # ingredients); a stored one, outside the member's compartment, is in the snapshot.
    ruleset = load_ruleset(Settings().profiles_dir)
    (patient,) = await _write(ctx, {"resourceType": "Patient"})
    (medication,) = await _write(
        ctx, {"resourceType": "Medication", "code": {"coding": [{"code": "617314"}]}}
    )
    dispense = {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationReference": {"reference": f"Medication/{medication}"},
    }
    await _write(ctx, dispense, _of("Observation", patient))
    async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
        found = await read_snapshots(
            repo, [patient], ruleset.compartment_types, ruleset.shared_types
        )
    snapshot = found[patient]
    assert [m["id"] for m in snapshot.of("Medication")] == [medication]
    assert len(snapshot.of("MedicationDispense")) == 1
    assert snapshot.of("Observation") == ()
