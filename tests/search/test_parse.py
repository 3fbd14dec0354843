"""The search parser alone (no database): values, limits and what it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cmfhir.config import default_profiles_dir
from cmfhir.errors import BadRequest
from cmfhir.resources.search_parameters import load_registry
from cmfhir.search.model import NumberValue, QuantityValue
from cmfhir.search.parse import MAX_CRITERIA, parse_search

REGISTRY = load_registry(default_profiles_dir())


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        pytest.param("0000000001", 1, id="leading-zeros"),
        pytest.param("0", 0, id="zero"),
        pytest.param("999999999999", 1000, id="huge-is-capped"),
        pytest.param("9" * 5000, 1000, id="thousands-of-digits-is-capped"),
    ],
)
def test_count(raw: str, count: int) -> None:
    assert parse_search(REGISTRY, "Patient", [("_count", raw)], max_count=1000).count == count


def test_number_range_is_exact_past_28_digits() -> None:
    text = "123456789012345678901234567890.123456789"
    request = parse_search(REGISTRY, "Observation", [("value-quantity", text)])
    value = request.criteria[0].values[0]
    assert isinstance(value, QuantityValue)
    assert value.value == Decimal(text)
    assert value.low == Decimal("123456789012345678901234567890.1234567885")
    assert value.high == Decimal("123456789012345678901234567890.1234567895")


def test_number_implicit_precision() -> None:
    request = parse_search(REGISTRY, "RiskAssessment", [("probability", "gt0.3")])
    value = request.criteria[0].values[0]
    assert isinstance(value, NumberValue)
    assert (value.prefix, value.low, value.high) == ("gt", Decimal("0.25"), Decimal("0.35"))


def test_too_many_criteria() -> None:
    ok = [("name", f"x{i}") for i in range(MAX_CRITERIA)]
    assert len(parse_search(REGISTRY, "Patient", ok).criteria) == MAX_CRITERIA
    with pytest.raises(BadRequest) as refused:
        parse_search(REGISTRY, "Patient", [*ok, ("name", "one-more")])
    assert refused.value.issues[0].code == "too-costly"


def test_chain_links_count_as_criteria() -> None:
    chained = [("subject:Patient.general-practitioner.name", f"x{i}") for i in range(14)]
    with pytest.raises(BadRequest):
        parse_search(REGISTRY, "Encounter", chained)  # 14 criteria of 3 lookups each
