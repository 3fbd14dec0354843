"""Stamping a version with the database clock: `meta.lastUpdated` in the stored text and
`last_updated` change together, whatever else the resource holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cmfhir.resources.fhirjson import dump_json
from cmfhir.store.history import restamp
from cmfhir.store.records import NewVersion

BEFORE = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
AFTER = datetime(2026, 1, 2, 3, 4, 9, 1000, tzinfo=UTC)


def _version(content: dict[str, object] | None) -> NewVersion:
    return NewVersion(
        resource_type="Patient",
        id="p",
        version=1,
        last_updated=BEFORE,
        method="create" if content else "delete",
        content=None if content is None else dump_json(content).decode(),
        index=None,
        patient_id=None,
    )


def test_meta_last_updated_is_replaced_and_nothing_else() -> None:
    sneaky = 'x","lastUpdated":"2026-01-02T03:04:05.678Z'
    v = _version(
        {
            "resourceType": "Patient",
            "id": "p",
            "meta": {"versionId": "1", "lastUpdated": "2026-01-02T03:04:05.678Z"},
            "name": [{"family": sneaky}],
            "contained": [
                {"resourceType": "Basic", "meta": {"lastUpdated": "2026-01-02T03:04:05.678Z"}}
            ],
        }
    )
    restamp(v, AFTER)
    assert v.last_updated == AFTER
    assert v.content is not None
    body = json.loads(v.content)
    assert body["meta"]["lastUpdated"] == "2026-01-02T03:04:09.001Z"
    assert body["name"][0]["family"] == sneaky
    assert body["contained"][0]["meta"]["lastUpdated"] == "2026-01-02T03:04:05.678Z"


def test_content_in_another_shape_is_stamped_too() -> None:
    v = _version({"resourceType": "Patient", "id": "p", "gender": "other"})
    restamp(v, AFTER)
    assert v.content is not None
    assert json.loads(v.content)["meta"] == {"lastUpdated": "2026-01-02T03:04:09.001Z"}


def test_a_deletion_has_only_its_time() -> None:
    v = _version(None)
    restamp(v, AFTER)
    assert (v.last_updated, v.content) == (AFTER, None)
