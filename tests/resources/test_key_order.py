"""resourceType moved first in stored JSON text, as PostgreSQL's jsonb prints it."""

from __future__ import annotations

import json

import pytest

from cmfhir.resources.key_order import resource_type_first


@pytest.mark.parametrize(
    ("stored", "expected_keys"),
    [
        pytest.param(
            '{"id": "1", "meta": {"versionId": "1"}, "gender": "male", '
            '"resourceType": "Patient", "generalPractitioner": [{"reference": "Practitioner/2"}]}',
            ["resourceType", "id", "meta", "gender", "generalPractitioner"],
            id="middle",
        ),
        pytest.param('{"id": "1", "resourceType": "Patient"}', ["resourceType", "id"], id="last"),
        pytest.param(
            '{"id": "1", "contained": [{"id": "c", "resourceType": "Patient"}], '
            '"resourceType": "Patient"}',
            ["resourceType", "id", "contained"],
            id="contained-same-type",
        ),
        pytest.param(
            '{"id": "1", "text": {"div": "<div>\\"resourceType\\": \\"Patient\\"</div>"}, '
            '"resourceType": "Patient"}',
            ["resourceType", "id", "text"],
            id="quoted-in-a-string",
        ),
        pytest.param(
            '{"resourceType":"Patient","id":"1"}', ["resourceType", "id"], id="already-first"
        ),
    ],
)
def test_resource_type_first(stored: str, expected_keys: list[str]) -> None:
    served = resource_type_first(stored, "Patient")
    assert list(json.loads(served)) == expected_keys
    assert json.loads(served) == json.loads(stored)
