"""Index values extracted from resources: date ranges, numbers, normalized strings, token,
reference and quantity shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cmfhir.resources.index_values import (
    DATE_MAX,
    DATE_MIN,
    DateEntry,
    IdentifierTypeEntry,
    IndexingFailed,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    ReferenceIdentifierEntry,
    ResourceIndex,
    StringEntry,
    TokenEntry,
    UriEntry,
    component_param,
    composite_parameters,
    date_range,
    extract_index,
    normalize_string,
    number_range,
    parse_reference,
)
from cmfhir.resources.search_parameters import (
    SearchParameter,
    SearchParameterRegistry,
    load_registry,
)

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "profiles"
SYNTHEA = ROOT / "tests" / "data" / "synthea"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return load_registry(PROFILES)


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        pytest.param("2020", utc(2020, 1, 1), utc(2021, 1, 1), id="year"),
        pytest.param("2020-02", utc(2020, 2, 1), utc(2020, 3, 1), id="month"),
        pytest.param("2020-12", utc(2020, 12, 1), utc(2021, 1, 1), id="december"),
        pytest.param("2020-02-29", utc(2020, 2, 29), utc(2020, 3, 1), id="leap-day"),
        pytest.param("2020-12-31", utc(2020, 12, 31), utc(2021, 1, 1), id="year-end-day"),
        pytest.param(
            "2020-01-01T10:30Z", utc(2020, 1, 1, 10, 30), utc(2020, 1, 1, 10, 31), id="minute"
        ),
        pytest.param(
            "2020-01-01T10:30:15Z",
            utc(2020, 1, 1, 10, 30, 15),
            utc(2020, 1, 1, 10, 30, 16),
            id="second",
        ),
        pytest.param(
            "2020-01-01T10:30:15.5Z",
            utc(2020, 1, 1, 10, 30, 15, 500000),
            utc(2020, 1, 1, 10, 30, 15, 600000),
            id="tenth",
        ),
        pytest.param(
            "2020-01-01T10:30:15.123Z",
            utc(2020, 1, 1, 10, 30, 15, 123000),
            utc(2020, 1, 1, 10, 30, 15, 124000),
            id="millisecond",
        ),
        pytest.param(
            "2020-01-01T10:30:15.123456789Z",
            utc(2020, 1, 1, 10, 30, 15, 123456),
            utc(2020, 1, 1, 10, 30, 15, 123457),
            id="beyond-microseconds",
        ),
        pytest.param(
            "2020-01-01T10:30:00+05:30",
            utc(2020, 1, 1, 5, 0),
            utc(2020, 1, 1, 5, 0, 1),
            id="positive-offset",
        ),
        pytest.param(
            "2019-12-31T22:00:00-03:00",
            utc(2020, 1, 1, 1, 0),
            utc(2020, 1, 1, 1, 0, 1),
            id="negative-offset-crosses-year",
        ),
        pytest.param(
            "2020-01-01T10:30:00", utc(2020, 1, 1, 10, 30), utc(2020, 1, 1, 10, 30, 1), id="no-tz"
        ),
        pytest.param(
            "2020-01-01T10:30:00+00:00",
            utc(2020, 1, 1, 10, 30),
            utc(2020, 1, 1, 10, 30, 1),
            id="zero-offset",
        ),
        pytest.param(
            "9999-12-31T23:59:59Z",
            utc(9999, 12, 31, 23, 59, 59),
            DATE_MAX,
            id="last-second-open-end",
        ),
        pytest.param(
            "2024-02-29T23:59:59+14:00",
            utc(2024, 2, 29, 9, 59, 59),
            utc(2024, 2, 29, 10),
            id="leap-day-largest-offset",
        ),
        pytest.param("9999", utc(9999, 1, 1), DATE_MAX, id="last-year-open-end"),
        pytest.param("9999-12-31", utc(9999, 12, 31), DATE_MAX, id="last-day-open-end"),
    ],
)
def test_date_range(text: str, low: datetime, high: datetime) -> None:
    got = date_range(text)
    assert got == (low, high)
    assert got[0].tzinfo is UTC and got[1].tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("20", id="short-year"),
        pytest.param("2020-1", id="one-digit-month"),
        pytest.param("2020-13", id="month-13"),
        pytest.param("2020-02-30", id="february-30"),
        pytest.param("2021-02-29", id="not-leap"),
        pytest.param("2020-01-01T10Z", id="hour-only"),
        pytest.param("2020-01-01T25:00Z", id="hour-25"),
        pytest.param("2020-01-01T10:00:60Z", id="second-60"),
        pytest.param("2020-01-01T10:00:00+15:00", id="offset-15h"),
        pytest.param("2020-01-01T10:00:00+10:60", id="offset-60-minutes"),
        pytest.param("2021-02-29T10:00:00Z", id="not-leap-with-time"),
        pytest.param("2020-01-01T10:00:00+0500", id="offset-without-colon"),
        pytest.param("2020-01-01 10:00:00Z", id="space"),
        pytest.param("2020-01-01T10:00:00.Z", id="empty-fraction"),
        pytest.param("0000", id="year-zero"),
        pytest.param("\uff12\uff10\uff12\uff10", id="fullwidth-digits"),
        pytest.param("2020-01-01T10:00:00z", id="lowercase-z"),
        pytest.param("", id="empty"),
    ],
)
def test_date_range_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)


def test_first_instant_clamps_to_date_min() -> None:
    low, high = date_range("0001-01-01T00:00:00+14:00")
    assert low == DATE_MIN
    assert high == DATE_MIN  # the whole second lies before the first representable instant


def test_offset_is_kept_as_the_same_instant() -> None:
    low, _ = date_range("2020-06-01T12:00:00+02:00")
    assert low == datetime(2020, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))


# --- numbers and strings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        pytest.param("100", "99.5", "100.5", id="integer"),
        pytest.param(100, "99.5", "100.5", id="int"),
        pytest.param("100.0", "99.95", "100.05", id="one-decimal"),
        pytest.param(100.0, "99.95", "100.05", id="float-keeps-its-repr"),
        pytest.param("1e2", "50", "150", id="exponent"),
        pytest.param("0.001", "0.0005", "0.0015", id="small"),
        pytest.param("-5", "-5.5", "-4.5", id="negative"),
        pytest.param(Decimal("2.50"), "2.495", "2.505", id="trailing-zero"),
    ],
)
def test_number_range(value: Any, low: str, high: str) -> None:
    assert number_range(value) == (Decimal(low), Decimal(high))


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", True])
def test_number_range_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        number_range(value)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        pytest.param("Smith", "smith", id="case"),
        pytest.param("Renée", "renee", id="acute"),
        pytest.param("ÅSTRÖM", "astrom", id="ring-umlaut-upper"),
        pytest.param("Muñoz Peña", "munoz pena", id="tilde"),
        pytest.param("Straße", "strasse", id="sharp-s"),
        pytest.param("ﬁnn", "finn", id="ligature"),
        pytest.param("  Mary \t Ann\n", "mary ann", id="whitespace"),
        pytest.param("李 小龙", "李 小龙", id="cjk-unchanged"),
        pytest.param("\uff2a\uff4f\uff45", "joe", id="fullwidth-letters"),
    ],
)
def test_normalize_string(text: str, normalized: str) -> None:
    assert normalize_string(text) == normalized


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("Patient/1", ("Patient", "1", "Patient/1", None), id="relative"),
        pytest.param(
            "Patient/1/_history/2",
            ("Patient", "1", "Patient/1/_history/2", None),
            id="relative-versioned",
        ),
        pytest.param(
            "https://x.org/fhir/Patient/a-1.b",
            ("Patient", "a-1.b", "https://x.org/fhir/Patient/a-1.b", None),
            id="absolute",
        ),
        pytest.param(
            "http://hl7.org/fhir/ValueSet/vs|4.0.1",
            ("ValueSet", "vs", "http://hl7.org/fhir/ValueSet/vs", "4.0.1"),
            id="canonical-version",
        ),
        pytest.param(
            "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
            (None, None, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", None),
            id="urn",
        ),
        pytest.param("http://loinc.org", (None, None, "http://loinc.org", None), id="no-type-id"),
    ],
)
def test_parse_reference(text: str, parsed: tuple[Any, ...]) -> None:
    assert parse_reference(text) == parsed


# --- extraction by value family ---------------------------------------------------------------


def _entries(index: ResourceIndex, family: str, param: str) -> list[Any]:
    return [e for e in getattr(index, family) if e.param == param]


@pytest.mark.parametrize(
    ("resource", "param", "expected"),
    [
        pytest.param(
            {"resourceType": "Patient", "gender": "female"},
            "gender",
            [TokenEntry("gender", "http://hl7.org/fhir/administrative-gender", "female")],
            id="code-with-the-system-of-its-binding",
        ),
        pytest.param(
            {"resourceType": "CodeSystem", "concept": [{"code": "x1"}]},
            "code",
            [TokenEntry("code", None, "x1")],
            id="code-without-required-binding",
        ),
        pytest.param(
            {"resourceType": "Patient", "active": False},
            "active",
            [TokenEntry("active", None, "false")],
            id="boolean",
        ),
        pytest.param(
            {"resourceType": "Patient", "deceasedDateTime": "2020"},
            "deceased",
            [TokenEntry("deceased", None, "true")],
            id="deceased-expression",
        ),
        pytest.param(
            {
                "resourceType": "Observation",
                "code": {
                    "coding": [
                        {"system": "http://loinc.org", "code": "8480-6", "display": "Systolic"},
                        {"system": "http://snomed.info/sct", "code": "271649006"},
                    ],
                    "text": "Systolic BP",
                },
            },
            "code",
            [
                TokenEntry("code", "http://loinc.org", "8480-6", "systolic"),
                TokenEntry("code", "http://snomed.info/sct", "271649006"),
                TokenEntry("code", None, None, "systolic bp"),
            ],
            id="codeable-concept",
        ),
        pytest.param(
            {
                "resourceType": "Observation",
                "code": {"coding": [{"code": "x", "display": "Héart"}], "text": "héart"},
            },
            "code",
            [TokenEntry("code", None, "x", "heart")],
            id="text-same-as-display",
        ),
        pytest.param(
            {"resourceType": "Observation", "code": {"text": "free text only"}},
            "code",
            [TokenEntry("code", None, None, "free text only")],
            id="text-only-concept",
        ),
        pytest.param(
            {"resourceType": "Encounter", "class": {"system": "urn:v3", "code": "AMB"}},
            "class",
            [TokenEntry("class", "urn:v3", "AMB")],
            id="coding",
        ),
        pytest.param(
            {"resourceType": "Patient", "meta": {"tag": [{"system": "urn:t", "code": "x"}]}},
            "_tag",
            [TokenEntry("_tag", "urn:t", "x")],
            id="meta-tag",
        ),
        pytest.param(
            {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]},
            "identifier",
            [TokenEntry("identifier", "urn:mrn", "7")],
            id="identifier",
        ),
        pytest.param(
            {
                "resourceType": "Patient",
                "telecom": [
                    {"system": "phone", "value": "555-1"},
                    {"system": "email", "value": "a@b.org"},
                ],
            },
            "email",
            [TokenEntry("email", "email", "a@b.org")],
            id="contact-point-where",
        ),
    ],
)
def test_token(
    registry: SearchParameterRegistry, resource: dict[str, Any], param: str, expected: list[Any]
) -> None:
    assert _entries(extract_index(resource, registry), "token", param) == expected


def test_identifier_type_for_of_type(registry: SearchParameterRegistry) -> None:
    resource = {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ],
                    "text": "Medical Record Number",
                },
                "system": "urn:mrn",
                "value": "7",
            }
        ],
    }
    index = extract_index(resource, registry)
    assert _entries(index, "token", "identifier") == [
        TokenEntry("identifier", "urn:mrn", "7", "medical record number")
    ]
    assert index.identifier_types == [
        IdentifierTypeEntry(
            "identifier", "http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "7"
        )
    ]


def test_strings_of_names_addresses_and_extensions(registry: SearchParameterRegistry) -> None:
    resource = {
        "resourceType": "Patient",
        "name": [{"family": "Núñez", "given": ["José", "M"], "prefix": ["Dr"], "text": "x y"}],
        "address": [
            {"line": ["1 Main St"], "city": "Raleigh", "state": "NC", "postalCode": "27601"}
        ],
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": "Ochoa",
            }
        ],
    }
    index = extract_index(resource, registry)
    assert _entries(index, "string", "family") == [StringEntry("family", "nunez", "Núñez")]
    assert [e.value for e in _entries(index, "string", "name")] == [
        "nunez",
        "jose",
        "m",
        "dr",
        "x y",
    ]
    assert [e.exact for e in _entries(index, "string", "address")] == [
        "1 Main St",
        "Raleigh",
        "NC",
        "27601",
    ]
    assert _entries(index, "string", "address-city") == [
        StringEntry("address-city", "raleigh", "Raleigh")
    ]
    assert _entries(index, "string", "mothersMaidenName") == [
        StringEntry("mothersMaidenName", "ochoa", "Ochoa")
    ]


@pytest.mark.parametrize(
    ("resource", "param", "expected"),
    [
        pytest.param(
            {"resourceType": "Patient", "birthDate": "1984-07-02"},
            "birthdate",
            [DateEntry("birthdate", utc(1984, 7, 2), utc(1984, 7, 3))],
            id="date",
        ),
        pytest.param(
            {"resourceType": "Encounter", "period": {"start": "2020-01-01T10:00:00Z"}},
            "date",
            [DateEntry("date", utc(2020, 1, 1, 10), DATE_MAX)],
            id="period-open-end",
        ),
        pytest.param(
            {"resourceType": "Encounter", "period": {"end": "2020-01-02"}},
            "date",
            [DateEntry("date", DATE_MIN, utc(2020, 1, 3))],
            id="period-open-start",
        ),
        pytest.param(
            {
                "resourceType": "Observation",
                "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-31"},
            },
            "date",
            [DateEntry("date", utc(2020, 1, 1), utc(2020, 2, 1))],
            id="period-choice",
        ),
        pytest.param(
            {
                "resourceType": "ServiceRequest",
                "occurrenceTiming": {
                    "event": ["2020-03-01", "2020-01-15"],
                    "repeat": {"boundsPeriod": {"start": "2020-01-01", "end": "2020-06-30"}},
                },
            },
            "occurrence",
            [DateEntry("occurrence", utc(2020, 1, 1), utc(2020, 7, 1))],
            id="timing-outer-limits",
        ),
        pytest.param(
            {"resourceType": "AuditEvent", "recorded": "2020-01-01T10:00:00.123+01:00"},
            "date",
            [DateEntry("date", utc(2020, 1, 1, 9, 0, 0, 123000), utc(2020, 1, 1, 9, 0, 0, 124000))],
            id="instant",
        ),
        pytest.param(
            {"resourceType": "Patient", "birthDate": "not-a-date"},
            "birthdate",
            [],
            id="unparseable-skipped",
        ),
    ],
)
def test_date(
    registry: SearchParameterRegistry, resource: dict[str, Any], param: str, expected: list[Any]
) -> None:
    assert _entries(extract_index(resource, registry), "date", param) == expected


def test_quantities_and_numbers(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {
            "value": 120.5,
            "unit": "mm[Hg]",
            "system": "http://unitsofmeasure.org",
            "code": "mm[Hg]",
        },
    }
    assert _entries(extract_index(observation, registry), "quantity", "value-quantity") == [
        QuantityEntry(
            "value-quantity",
            "http://unitsofmeasure.org",
            "mm[Hg]",
            "mm[Hg]",
            Decimal("120.5"),
            Decimal("120.45"),
            Decimal("120.55"),
        )
    ]
    condition = {"resourceType": "Condition", "onsetRange": {"low": {"value": 10, "unit": "a"}}}
    assert _entries(extract_index(condition, registry), "quantity", "onset-age") == [
        QuantityEntry("onset-age", None, None, "a", None, Decimal(10), Decimal("Infinity"))
    ]
    invoice = {"resourceType": "Invoice", "totalGross": {"value": 12.5, "currency": "USD"}}
    assert _entries(extract_index(invoice, registry), "quantity", "totalgross") == [
        QuantityEntry(
            "totalgross",
            "urn:iso:std:iso:4217",
            "USD",
            "USD",
            Decimal("12.5"),
            Decimal("12.45"),
            Decimal("12.55"),
        )
    ]
    risk = {
        "resourceType": "RiskAssessment",
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"high": {"value": 1}}}],
    }
    assert _entries(extract_index(risk, registry), "number", "probability") == [
        NumberEntry("probability", Decimal("0.25"), Decimal("0.245"), Decimal("0.255")),
        NumberEntry("probability", None, Decimal("-Infinity"), Decimal(1)),
    ]


def test_reference_shapes(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
        "performer": [
            {"reference": "https://other.org/fhir/Practitioner/d1/_history/3"},
            {"reference": "#contained-1"},
            {"identifier": {"system": "urn:npi", "value": "123"}, "display": "Dr X"},
        ],
        "hasMember": [{"display": "display only"}],
    }
    index = extract_index(observation, registry)
    assert _entries(index, "reference", "subject") == [
        ReferenceEntry("subject", "Patient", "p1", "Patient/p1")
    ]
    assert _entries(index, "reference", "patient") == [
        ReferenceEntry("patient", "Patient", "p1", "Patient/p1")
    ]
    assert _entries(index, "reference", "encounter") == [
        ReferenceEntry("encounter", None, None, "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0")
    ]
    assert _entries(index, "reference", "performer") == [
        ReferenceEntry(
            "performer", "Practitioner", "d1", "https://other.org/fhir/Practitioner/d1/_history/3"
        )
    ]
    assert index.reference_identifiers == [ReferenceIdentifierEntry("performer", "urn:npi", "123")]
    assert _entries(index, "reference", "has-member") == []


def test_canonical_reference_keeps_version(registry: SearchParameterRegistry) -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "https://cmfhir.org/fhir/Questionnaire/engagement|2",
    }
    assert extract_index(response, registry).reference == [
        ReferenceEntry(
            "questionnaire",
            "Questionnaire",
            "engagement",
            "https://cmfhir.org/fhir/Questionnaire/engagement",
            "2",
        )
    ]


def test_meta_and_ids(registry: SearchParameterRegistry) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {
            "lastUpdated": "2020-01-01T00:00:00Z",
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
            "source": "urn:ehr:a",
            "security": [{"system": "urn:s", "code": "R"}],
        },
    }
    index = extract_index(patient, registry)
    assert index.uri == [
        UriEntry("_profile", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"),
        UriEntry("_source", "urn:ehr:a"),
    ]
    assert _entries(index, "token", "_security") == [TokenEntry("_security", "urn:s", "R")]
    assert index.date == []  # _lastUpdated and _id are columns of the store, not index rows


def test_entries_are_unique_per_parameter(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": "s", "code": "c"}]},
        "component": [{"code": {"coding": [{"system": "s", "code": "c"}]}}],
    }
    combo = _entries(extract_index(observation, registry), "token", "combo-code")
    assert combo == [TokenEntry("combo-code", "s", "c")]


LOINC = "http://loinc.org"


def _component(code: str, value: float) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "valueQuantity": {"value": value, "unit": "mm[Hg]"},
    }


def _groups(index: ResourceIndex, code: str) -> list[set[tuple[str, Any]]]:
    """Each composite group of `code` as {(component param, value)} (token code, quantity
    value, concept code)."""
    found = []
    for group in index.composite:
        values = group.values
        entries: set[tuple[str, Any]] = {(e.param, e.code) for e in values.token}
        entries |= {(e.param, e.value) for e in values.quantity}
        if all(param.startswith(code + "$") for param, _ in entries):
            found.append(entries)
    return found


def test_composite_values_are_grouped_per_repetition(registry: SearchParameterRegistry) -> None:
    codes = {p.code for p in composite_parameters(registry, "Observation")}
    assert {"code-value-quantity", "component-code-value-quantity", "combo-code-value-concept"} <= (
        codes
    )
    blood_pressure = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [_component("8480-6", 130), _component("8462-4", 85)],
    }
    index = extract_index(blood_pressure, registry)
    code, value = (
        component_param("component-code-value-quantity", 0),
        component_param("component-code-value-quantity", 1),
    )
    assert _groups(index, "component-code-value-quantity") == [
        {(code, "8480-6"), (value, Decimal(130))},
        {(code, "8462-4"), (value, Decimal(85))},
    ]
    # combo: the Observation itself has no value, so only its components make groups
    assert len(_groups(index, "combo-code-value-quantity")) == 2
    # Composite values never appear among the plain parameters' entries.
    plain = [
        getattr(index, f)
        for f in ResourceIndex.__slots__
        if f not in ("composite", "stored_elsewhere")
    ]
    assert not any(e.param.split("$")[0] in codes for entries in plain for e in entries)
    assert [g.group for g in index.composite] == list(range(len(index.composite)))


def test_composite_on_the_resource_itself(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "valueQuantity": {"value": 99, "unit": "mg/dL"},
    }
    index = extract_index(observation, registry)
    assert _groups(index, "code-value-quantity") == [
        {("code-value-quantity$0", "2339-0"), ("code-value-quantity$1", Decimal(99))}
    ]
    # A repetition without a value for every component makes no group.
    assert _groups(index, "code-value-concept") == []


def test_composite_component_on_the_resource(registry: SearchParameterRegistry) -> None:
    """`%resource.referenceSeq.chromosome` is read from the resource, not the variant."""
    sequence = {
        "resourceType": "MolecularSequence",
        "coordinateSystem": 0,
        "referenceSeq": {"chromosome": {"coding": [{"code": "7"}]}},
        "variant": [{"start": 10, "end": 20}, {"start": 30, "end": 40}],
    }
    index = extract_index(sequence, registry)
    groups = [
        {(e.param, e.code) for e in g.values.token} | {(e.param, e.value) for e in g.values.number}
        for g in index.composite
    ]
    assert {
        ("chromosome-variant-coordinate$0", "7"),
        ("chromosome-variant-coordinate$1", Decimal(30)),
        ("chromosome-variant-coordinate$2", Decimal(40)),
    } in groups


def test_failing_expression_refuses_the_resource() -> None:
    """A parameter whose expression fails on a resource is an error naming it, not a
    resource silently left out of that parameter's index."""
    custom = SearchParameter(
        url="urn:test:SearchParameter/first-given",
        code="first-given",
        base=("Patient",),
        type="string",
        expression="Patient.name.given.single()",
    )
    registry = SearchParameterRegistry([custom])
    one = {"resourceType": "Patient", "name": [{"given": ["Ada"]}]}
    assert extract_index(one, registry).string == [StringEntry("first-given", "ada", "Ada")]
    two = {"resourceType": "Patient", "name": [{"given": ["Ada", "Augusta"]}]}
    with pytest.raises(IndexingFailed) as failed:
        extract_index(two, registry)
    assert failed.value.parameter is custom
    assert failed.value.status == 422
    assert "first-given" in failed.value.diagnostics
    assert "Ada" not in failed.value.diagnostics


# --- Synthea --------------------------------------------------------------------------------


def _resources() -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for path in sorted(SYNTHEA.glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources.extend(e["resource"] for e in bundle["entry"])
    return resources


def test_every_synthea_resource_indexes(registry: SearchParameterRegistry) -> None:
    resources = _resources()
    assert len(resources) > 100
    for resource in resources:
        index = extract_index(resource, registry)
        assert index.token, resource["resourceType"]  # every one has at least meta.tag


def test_synthea_observation(registry: SearchParameterRegistry) -> None:
    observation = next(
        r
        for r in _resources()
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "8302-2"
    )
    index = extract_index(observation, registry)
    assert TokenEntry("code", "http://loinc.org", "8302-2", "body height") in index.token
    assert {e.param for e in index.quantity} == {"value-quantity", "combo-value-quantity"}
    assert [e.param for e in index.date] == ["date"]
    assert {(e.param, e.target_type) for e in index.reference} == {
        ("subject", None),  # urn:uuid: a transaction rewrites it to Patient/id before indexing
        ("encounter", None),
    }
