"""The 1 MB limit of FHIR strings, and base64Binary's exemption from it, by element type
(https://hl7.org/fhir/R4B/datatypes.html#primitive)."""

from __future__ import annotations

from typing import Any

import pytest

from cmfhir.errors import BadRequest
from cmfhir.resources.sizes import check_string_sizes

LIMIT = 100  # the walk is the same at any limit; small keeps the cases readable
LONG = "x" * (LIMIT + 1)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        pytest.param({"resourceType": "Patient", "gender": LONG}, "Patient.gender", id="code"),
        pytest.param(
            {"resourceType": "Observation", "valueSampledData": {"data": LONG}},
            "Observation.valueSampledData.data",
            id="sampled-data-is-a-string",
        ),
        pytest.param(
            {"resourceType": "Patient", "_birthDate": {"extension": [{"valueString": LONG}]}},
            "Patient._birthDate.extension[0].valueString",
            id="primitive-extension",
        ),
        pytest.param(
            {"resourceType": "Patient", "unknownElement": LONG},
            "Patient.unknownElement",
            id="unknown-element",
        ),
        pytest.param({"resourceType": "NoSuchType", "data": LONG}, "NoSuchType.data", id="type"),
        pytest.param(
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Basic"}}, 1]}
            | {"signature": {"data": "ok", "who": {"display": LONG}}},
            "Bundle.signature.who.display",
            id="bundle-signature",
        ),
    ],
)
def test_long_strings_are_refused(document: dict[str, Any], where: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_string_sizes(document, LIMIT)
    assert refused.value.issues[0].expression == (where,)
    assert refused.value.issues[0].code == "too-long"


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"resourceType": "Binary", "contentType": "x", "data": LONG}, id="binary"),
        pytest.param(
            {"resourceType": "Media", "content": {"data": LONG}}, id="attachment-in-media"
        ),
        pytest.param(
            {
                "resourceType": "Bundle",
                "entry": [{"resource": {"resourceType": "Binary", "data": LONG}}],
                "signature": {"data": LONG},
            },
            id="bundle-entry-and-signature",
        ),
        pytest.param(
            {
                "resourceType": "Patient",
                "contained": [{"resourceType": "Binary", "data": LONG}],
                "extension": [{"url": "u", "valueBase64Binary": LONG}],
            },
            id="contained-and-extension",
        ),
        pytest.param({"resourceType": "Patient", "gender": "x" * LIMIT}, id="at-the-limit"),
    ],
)
def test_base64binary_and_short_strings_pass(document: dict[str, Any]) -> None:
    check_string_sizes(document, LIMIT)


def test_multibyte_characters_count_as_their_utf8_bytes() -> None:
    check_string_sizes({"resourceType": "Patient", "gender": "é" * (LIMIT // 2)}, LIMIT)
    with pytest.raises(BadRequest):
        check_string_sizes({"resourceType": "Patient", "gender": "é" * (LIMIT // 2 + 1)}, LIMIT)
