"""The search parser alone (no database): values, limits and what it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cmfhir.config import default_profiles_dir
from cmfhir.errors import BadRequest
from cmfhir.resources.search_parameters import load_registry
from cmfhir.search.model import NumberValue, QuantityValue
from cmfhir.search.parse import MAX_CRITERIA, parse_search, selection_query

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


@pytest.mark.parametrize(
    ("raw", "low", "high"),
    [
        # https://hl7.org/fhir/R4B/search.html#number, the table of examples
        pytest.param("100", "99.5", "100.5", id="100"),
        pytest.param("100.00", "99.995", "100.005", id="100.00"),
        pytest.param("1e2", "95", "105", id="1e2"),
        pytest.param("1E+2", "95", "105", id="1E+2"),
        pytest.param("1.1e2", "109.5", "110.5", id="1.1e2"),
    ],
)
def test_number_precision_as_the_spec_tables_it(raw: str, low: str, high: str) -> None:
    value = parse_search(REGISTRY, "Observation", [("value-quantity", raw)]).criteria[0].values[0]
    assert isinstance(value, QuantityValue)
    assert (value.low, value.high) == (Decimal(low), Decimal(high))


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        pytest.param("nmae", "name", id="swapped-letters"),
        pytest.param("familly", "family", id="doubled-letter"),
        pytest.param("_lastupdated", "_lastUpdated", id="case"),
        pytest.param("_incude", "_include", id="result-parameter"),
    ],
)
def test_unknown_parameter_names_the_closest_known(name: str, suggestion: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_search(REGISTRY, "Patient", [(name, "x")])
    issue = refused.value.issues[0]
    assert (issue.code, issue.expression) == ("not-supported", (name,))
    assert f"'{name}'" in issue.diagnostics
    assert f"did you mean '{suggestion}'?" in issue.diagnostics


def test_lenient_ignores_unknown_parameters_with_a_warning() -> None:
    request = parse_search(REGISTRY, "Patient", [("nmae", "x"), ("name", "y")], strict=False)
    assert [c.code for c in request.criteria] == ["name"]
    assert request.echo == [("name", "y")]
    assert [w.expression for w in request.warnings] == [("nmae",)]


@pytest.mark.parametrize(
    ("query", "conditional"),
    [
        pytest.param("", False, id="empty"),
        pytest.param("_format=json", False, id="format"),
        pytest.param("_pretty=true&_summary=count&_include:iterate=Patient:link", False, id="many"),
        pytest.param("identifier=a|b&_format=json", True, id="criteria-and-format"),
        pytest.param("nmae=x", True, id="unknown-is-not-dropped"),
    ],
)
def test_selection_query(query: str, conditional: bool) -> None:
    assert (selection_query(query) is not None) == conditional
