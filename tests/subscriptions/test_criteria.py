"""A topic's fhirPathCriteria evaluated once per distinct view of the elements it reads
(subscriptions/criteria.py): the same answers as a full evaluation, far fewer evaluations,
and a full evaluation for every expression that may look at more."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from cmfhir.subscriptions.criteria import Criteria

ROOT = Path(__file__).resolve().parents[2]


def _admission() -> str:
    topic = json.loads(
        (ROOT / "profiles/content/SubscriptionTopic-encounter-admission-discharge.json").read_text()
    )
    expression: str = topic["resourceTrigger"][0]["fhirPathCriteria"]
    return expression


def _encounter(status: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"e{n}",
        "meta": {"versionId": str(n), "lastUpdated": f"2026-12-01T00:00:{n % 60:02d}Z"},
        "status": status,
        "class": {"code": "IMP"},
        "subject": {"reference": f"Patient/p{n}"},
    }


def test_the_admission_criteria_are_evaluated_once_per_status_pair() -> None:
    criteria = Criteria(_admission())
    assert criteria.names is not None and "status" in criteria.names
    statuses = ["planned", "in-progress", "finished"]
    pairs = list(itertools.product(statuses, [None, *statuses]))
    for n, (current, previous) in enumerate(pairs * 10):
        now = _encounter(current, n)
        before = None if previous is None else _encounter(previous, n + 1000)
        expected = Criteria(criteria.expression)._run(now, before)  # in full, on everything
        assert criteria.fires(now, before) is expected, (current, previous)
    # 120 changes (each with its own id, meta and subject), 12 status pairs.
    assert criteria.evaluated == len(pairs)


def test_a_choice_element_is_seen_under_its_typed_name() -> None:
    criteria = Criteria("%current.value > 5 and %previous.empty()")
    assert criteria.names is not None
    observation = {"resourceType": "Observation", "status": "final"}
    assert criteria.fires({**observation, "valueInteger": 7}, None) is True
    assert criteria.fires({**observation, "valueInteger": 3}, None) is False
    assert criteria.fires({**observation, "valueInteger": 7}, observation) is False


@pytest.mark.parametrize(
    "expression",
    [
        "%current = %previous",  # whole versions compared
        "%current.descendants().exists()",
        "%current.where(status = 'finished').exists()",
        "%current.period.start < now()",
        "$this.status = 'finished'",
        "%resource.status = 'finished'",
        "children().count() > 3",
        "%current.status.toString() = 'finished'",
    ],
)
def test_an_expression_that_may_look_at_more_is_evaluated_every_time(expression: str) -> None:
    criteria = Criteria(expression)
    assert criteria.names is None
    for n in range(3):
        criteria.fires(_encounter("finished", n), _encounter("finished", n))
    assert criteria.evaluated == 3


def test_a_meta_criteria_sees_meta() -> None:
    criteria = Criteria("%previous.exists() and %current.meta.versionId = '2'")
    assert criteria.names is not None
    assert criteria.fires(_encounter("finished", 2), _encounter("finished", 1)) is True
    assert criteria.fires(_encounter("finished", 3), _encounter("finished", 2)) is False
