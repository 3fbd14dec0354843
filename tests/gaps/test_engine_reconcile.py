"""Reconciling computed gaps with stored DetectedIssues (gaps/reconcile.py), without a
database: create, update, close with a mitigation, keep an acknowledged gap closed, leave a
failed rule's gaps alone, and change nothing the second time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cmfhir.gaps import detected_issue as di
from cmfhir.gaps.model import Gap
from cmfhir.gaps.reconcile import reconcile
from cmfhir.resources.version_validation import validate_for_version

AS_OF = datetime(2026, 10, 20, 12, tzinfo=UTC)
RULES = {"transition-follow-up", "no-care-manager"}


def _gap(status: str = "open-gap", **changes: Any) -> Gap:
    fields: dict[str, Any] = {
        "rule": "transition-follow-up",
        "key": "Encounter/e1",
        "status": status,
        "detail": "Discharged from WakeMed on 3 Oct; no contact since — due 10 Oct",
        "evidence": ("Encounter/e1",),
        "identified": datetime(2026, 10, 3, 15, tzinfo=UTC),
    }
    fields.update(changes)
    return Gap(**fields)


def _run(computed: list[Gap], stored: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    return reconcile(
        "p1",
        computed,
        stored,
        as_of=kw.get("as_of", AS_OF),
        care_manager=kw.get("care_manager", "Practitioner/cm1"),
        evaluated_rules=kw.get("rules", RULES),
    )


def _stored(resource: dict[str, Any]) -> dict[str, Any]:
    return dict(resource, meta={"versionId": "1", "lastUpdated": "2026-10-03T15:00:00.000Z"})


def test_a_new_gap_is_created_in_the_deqm_shape_and_validates() -> None:
    [created] = _run([_gap()], [])
    validate_for_version(created, "4.0", expected_type="DetectedIssue")
    assert created["id"] == di.issue_id("p1/transition-follow-up/Encounter/e1")
    assert di.gap_status(created) == "open-gap"
    assert created["identifiedDateTime"] == "2026-10-03T15:00:00Z"
    assert di.care_manager_of(created) == "Practitioner/cm1"
    assert "mitigation" not in created


def test_running_again_on_its_own_output_changes_nothing() -> None:
    [created] = _run([_gap()], [])
    assert _run([_gap()], [_stored(created)]) == []


def test_a_closed_gap_never_opened_is_not_written() -> None:
    assert _run([_gap("closed-gap", mitigation="Contacted")], []) == []


def test_a_status_change_updates_the_same_resource() -> None:
    [prospective] = _run([_gap("prospective-gap")], [])
    [opened] = _run([_gap()], [_stored(prospective)])
    assert opened["id"] == prospective["id"]
    assert di.gap_status(opened) == "open-gap"


def test_a_gap_no_longer_computed_is_closed_with_a_mitigation() -> None:
    [created] = _run([_gap()], [])
    [closed] = _run([], [_stored(created)])
    assert di.gap_status(closed) == "closed-gap"
    [mitigation] = closed["mitigation"]
    assert mitigation["date"] == "2026-10-20T12:00:00Z"
    assert mitigation["action"]["text"].startswith("Closed on 20 Oct 2026")
    validate_for_version(closed, "4.0", expected_type="DetectedIssue")
    assert _run([], [_stored(closed)]) == []


def test_a_rule_closing_its_gap_says_why_and_a_reopened_gap_loses_the_mitigation() -> None:
    [created] = _run([_gap()], [])
    [closed] = _run([_gap("closed-gap", mitigation="Contacted on 12 Oct")], [_stored(created)])
    assert closed["mitigation"][0]["action"]["text"] == "Contacted on 12 Oct"
    [reopened] = _run([_gap()], [_stored(closed)])
    assert di.gap_status(reopened) == "open-gap"
    assert "mitigation" not in reopened


def test_an_acknowledged_gap_stays_closed() -> None:
    [created] = _run([_gap()], [])
    acknowledged = _stored(dict(created, mitigation=[{"action": {"text": "Seen by the PCP"}}]))
    [closed] = _run([_gap()], [acknowledged])
    assert di.gap_status(closed) == "closed-gap"
    assert closed["mitigation"] == [{"action": {"text": "Seen by the PCP"}}]
    assert _run([_gap()], [_stored(closed)]) == []


def test_gaps_of_a_rule_not_evaluated_are_left_alone() -> None:
    [created] = _run([_gap()], [])
    assert _run([], [_stored(created)], rules={"no-care-manager"}) == []


def test_a_new_care_manager_is_stamped_on_open_gaps_only() -> None:
    [created] = _run([_gap()], [])
    [restamped] = _run([_gap()], [_stored(created)], care_manager="Practitioner/cm2")
    assert di.care_manager_of(restamped) == "Practitioner/cm2"
    [closed] = _run([], [_stored(created)])
    assert _run([], [_stored(closed)], care_manager="Practitioner/cm2") == []
