"""The search engine (https://hl7.org/fhir/R4B/search.html) as a table: query → expected ids,
over one corpus loaded once per module. Every resource carries a run tag, so the tables hold
on a database shared with other tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:10]
TAG = f"urn:test:run|{RUN}"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
Q = f"http://cmfhir.test/q/{RUN}"


def _rid(key: str) -> str:
    return f"{key}-{RUN}"


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


SNOMED = "http://snomed.info/sct"
SITTING, STANDING = "33586001", "10904000"


def _position(code: str) -> dict[str, Any]:
    return {
        "code": {"coding": [{"system": LOINC, "code": "8361-8"}]},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code}]},
    }


def _obs(
    key: str, patient: str, code: str, display: str, when: str, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": _rid(key),
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{_rid(patient)}"},
        "effectiveDateTime": when,
        **extra,
    }


CORPUS: list[dict[str, Any]] = [
    {
        "resourceType": "Practitioner",
        "id": _rid("prac-a"),
        "name": [{"family": "Greene", "given": ["Alice"]}],
    },
    {
        "resourceType": "Practitioner",
        "id": _rid("prac-b"),
        "name": [{"family": "Brown", "given": ["Bob"]}],
    },
    {"resourceType": "Organization", "id": _rid("org"), "name": "Piedmont Care"},
    {
        "resourceType": "Patient",
        "id": _rid("p1"),
        "meta": {
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ],
            "source": f"urn:test:source:{RUN}",
        },
        "identifier": [
            {
                "system": "urn:test:mrn",
                "value": f"mrn-1-{RUN}",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
            }
        ],
        "active": True,
        "name": [{"family": "Lovelace", "given": ["Ada"]}],
        "telecom": [{"system": "phone", "value": f"555-{RUN}"}],
        "gender": "female",
        "birthDate": "1985-12-10",
        "address": [{"city": "Durham", "state": "NC"}],
        "generalPractitioner": [{"reference": f"Practitioner/{_rid('prac-a')}"}],
    },
    {
        "resourceType": "Patient",
        "id": _rid("p2"),
        "identifier": [{"system": "urn:test:mrn", "value": f"mrn-2-{RUN}"}],
        "name": [{"family": "Núñez", "given": ["José"]}],
        "gender": "male",
        "birthDate": "1990-06",
        "address": [{"city": "Raleigh", "state": "NC"}],
        "generalPractitioner": [{"reference": f"Practitioner/{_rid('prac-b')}"}],
    },
    {
        "resourceType": "Patient",
        "id": _rid("p3"),
        "name": [{"family": "Lovell", "given": ["Sam"]}],
        "gender": "other",
        "generalPractitioner": [{"reference": f"Practitioner/{_rid('prac-a')}"}],
        "managingOrganization": {"reference": f"Organization/{_rid('org')}"},
    },
    {
        "resourceType": "Encounter",
        "id": _rid("e1"),
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        "subject": {"reference": f"Patient/{_rid('p1')}"},
        "participant": [{"individual": {"reference": f"Practitioner/{_rid('prac-a')}"}}],
        "period": {"start": "2024-03-01T10:00:00Z", "end": "2024-03-01T14:00:00Z"},
    },
    {
        "resourceType": "Encounter",
        "id": _rid("e2"),
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{_rid('p1')}"},
        "period": {"start": "2024-05-10", "end": "2024-05-10"},
    },
    {
        "resourceType": "Encounter",
        "id": _rid("e3"),
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{_rid('p2')}"},
        "period": {"start": "2023-12-31T23:00:00-05:00", "end": "2024-01-02"},
    },
    _obs(
        "o1",
        "p1",
        "8480-6",
        "Systolic blood pressure",
        "2024-03-01T10:30:00Z",
        valueQuantity=_qty(120, "mm[Hg]"),
        encounter={"reference": f"Encounter/{_rid('e1')}"},
    ),
    _obs(
        "o2",
        "p1",
        "8480-6",
        "Systolic blood pressure",
        "2024-05-10",
        valueQuantity=_qty(150.5, "mm[Hg]"),
    ),
    _obs("o3", "p2", "29463-7", "Body weight", "2024-01-01", valueQuantity=_qty(80, "kg")),
    _obs(
        "o4",
        "p1",
        "85354-9",
        "Blood pressure panel",
        "2023-06-01",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": _qty(130, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": _qty(85, "mm[Hg]"),
            },
            _position(STANDING),
        ],
    ),
    # 85/60: the systolic of o5 is below 90, o4's only value below 90 is its diastolic.
    _obs(
        "o5",
        "p2",
        "85354-9",
        "Blood pressure panel",
        "2022-06-01",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": _qty(85, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": _qty(60, "mm[Hg]"),
            },
            _position(SITTING),
        ],
    ),
    {
        "resourceType": "RiskAssessment",
        "id": _rid("r1"),
        "status": "final",
        "subject": {"reference": f"Patient/{_rid('p1')}"},
        "prediction": [{"probabilityDecimal": 0.25}],
    },
    {
        "resourceType": "RiskAssessment",
        "id": _rid("r2"),
        "status": "final",
        "subject": {"reference": f"Patient/{_rid('p2')}"},
        "prediction": [{"probabilityDecimal": 0.8}],
    },
    {"resourceType": "Questionnaire", "id": _rid("q1"), "status": "active", "url": f"{Q}/phq9"},
    {"resourceType": "Questionnaire", "id": _rid("q2"), "status": "active", "url": f"{Q}/gad7"},
]


@pytest.fixture(scope="module")
def corpus(client: httpx.Client) -> None:
    entries = []
    for resource in CORPUS:
        meta = {**resource.get("meta", {}), "tag": [{"system": "urn:test:run", "code": RUN}]}
        tagged = {**resource, "meta": meta}
        entries.append(
            {
                "resource": tagged,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
        )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = client.post("", json=bundle, headers=FHIR)
    assert response.status_code == 200, response.text


def _search(client: httpx.Client, path: str, params: dict[str, str]) -> list[str]:
    response = client.get(path, params={**params, "_tag": TAG, "_count": "100"})
    assert response.status_code == 200, response.text
    return [
        e["resource"]["id"].removesuffix(f"-{RUN}")
        for e in response.json().get("entry", [])
        if e["search"]["mode"] == "match"
    ]


def row(path: str, query: dict[str, str], expected: str, id: str) -> Any:
    return pytest.param(path, query, set(expected.split()), id=id)


SEARCHES = [
    # string: case- and accent-insensitive starts-with; :exact; :contains
    row("Patient", {"name": "lovel"}, "p1 p3", "string-prefix"),
    row("Patient", {"family": "NUNEZ"}, "p2", "string-accents-and-case"),
    row("Patient", {"given": "José"}, "p2", "string-accented-query"),
    row("Patient", {"name:exact": "Lovelace"}, "p1", "string-exact"),
    row("Patient", {"name:exact": "lovelace"}, "", "string-exact-is-case-sensitive"),
    row("Patient", {"name:contains": "OVEL"}, "p1 p3", "string-contains"),
    row("Patient", {"address-city": "durh"}, "p1", "string-address"),
    row("Patient", {"name": "lovelace,nunez"}, "p1 p2", "string-or"),
    row("Patient", {"name:missing": "false"}, "p1 p2 p3", "string-missing-false"),
    # token
    row("Patient", {"gender": "female"}, "p1", "token-code"),
    row("Patient", {"gender": "male,other"}, "p2 p3", "token-or"),
    row("Patient", {"gender:not": "female"}, "p2 p3", "token-not"),
    row(
        "Patient",
        {"gender": "http://hl7.org/fhir/administrative-gender|male"},
        "p2",
        "token-bound-code-system",
    ),
    row("Patient", {"gender": "|male"}, "", "token-bound-code-has-a-system"),
    row("Patient", {"identifier": f"urn:test:mrn|mrn-1-{RUN}"}, "p1", "token-system-code"),
    row("Patient", {"identifier": f"mrn-2-{RUN}"}, "p2", "token-code-any-system"),
    row("Patient", {"identifier": f"|mrn-1-{RUN}"}, "", "token-code-no-system"),
    row("Patient", {"identifier": "urn:test:mrn|"}, "p1 p2", "token-system-only"),
    row(
        "Patient",
        {"identifier:of-type": f"http://terminology.hl7.org/CodeSystem/v2-0203|MR|mrn-1-{RUN}"},
        "p1",
        "token-of-type",
    ),
    row("Patient", {"active": "true"}, "p1", "token-boolean"),
    row("Patient", {"phone": f"555-{RUN}"}, "p1", "token-contactpoint"),
    row("Observation", {"code": f"{LOINC}|8480-6"}, "o1 o2", "token-coding"),
    row("Observation", {"code:text": "systolic"}, "o1 o2", "token-text"),
    row("Encounter", {"class": "EMER"}, "e1", "token-coding-class"),
    row("Patient", {"gender:missing": "true"}, "", "token-missing-true"),
    row("Patient", {"active:missing": "true"}, "p2 p3", "token-missing-boolean"),
    # date, every prefix, several precisions, time zones
    row("Patient", {"birthdate": "1985"}, "p1", "date-year"),
    row("Patient", {"birthdate": "1985-12"}, "p1", "date-month"),
    row("Patient", {"birthdate": "1985-12-10"}, "p1", "date-day"),
    row("Patient", {"birthdate": "1985-12-11"}, "", "date-other-day"),
    row("Patient", {"birthdate": "1990"}, "p2", "date-year-contains-month"),
    row("Patient", {"birthdate": "1990-06-15"}, "", "date-day-inside-month-is-not-eq"),
    row("Patient", {"birthdate": "ge1990-06-15"}, "p2", "date-ge"),
    row("Patient", {"birthdate": "lt1986"}, "p1", "date-lt"),
    row("Patient", {"birthdate": "gt1986"}, "p2", "date-gt"),
    row("Patient", {"birthdate": "le1985-12-10"}, "p1", "date-le"),
    row("Patient", {"birthdate": "sa1985-12-10"}, "p2", "date-sa"),
    row("Patient", {"birthdate": "eb1990-01-01"}, "p1", "date-eb"),
    row("Patient", {"birthdate": "ne1985"}, "p2", "date-ne"),
    row("Patient", {"birthdate": "ap1985-12-10"}, "p1", "date-ap"),
    row("Patient", {"birthdate:missing": "true"}, "p3", "date-missing"),
    row("Encounter", {"date": "2024-03-01"}, "e1", "date-period-in-day"),
    row("Encounter", {"date": "ge2024-03-01T13:00:00Z"}, "e1 e2", "date-period-ge-second"),
    row("Encounter", {"date": "lt2024-01-01T05:00:00Z"}, "e3", "date-timezone-offset"),
    row("Encounter", {"date": "lt2024-01-01T03:00:00Z"}, "", "date-timezone-excludes"),
    row("Encounter", {"date": "lt2024-01-01T00:00:00-05:00"}, "e3", "date-query-timezone"),
    row("Observation", {"date": "2024-03-01T10:30:00Z"}, "o1", "date-second"),
    row("Observation", {"date": "2024-03"}, "o1", "date-month-obs"),
    row("Observation", {"date": "ge2024-01-01"}, "o1 o2 o3", "date-ge-year-start"),
    # number with implicit precision
    row("RiskAssessment", {"probability": "0.25"}, "r1", "number-eq"),
    row("RiskAssessment", {"probability": "0.3"}, "r1", "number-implicit-precision"),
    row("RiskAssessment", {"probability": "0.30"}, "", "number-more-precision"),
    row("RiskAssessment", {"probability": "gt0.5"}, "r2", "number-gt"),
    row("RiskAssessment", {"probability": "lt0.3"}, "r1", "number-lt"),
    row("RiskAssessment", {"probability": "ge0.8"}, "r2", "number-ge"),
    row("RiskAssessment", {"probability": "ne0.25"}, "r2", "number-ne"),
    row("RiskAssessment", {"probability:missing": "false"}, "r1 r2", "number-missing"),
    # quantity
    row("Observation", {"value-quantity": "120"}, "o1", "quantity-value"),
    row("Observation", {"value-quantity": f"120|{UCUM}|mm[Hg]"}, "o1", "quantity-system-code"),
    row("Observation", {"value-quantity": "120||kg"}, "", "quantity-wrong-unit"),
    row("Observation", {"value-quantity": "gt140"}, "o2", "quantity-gt"),
    row("Observation", {"value-quantity": "lt100||kg"}, "o3", "quantity-lt-unit"),
    row("Observation", {"value-quantity": "150.5"}, "o2", "quantity-decimal"),
    row("Observation", {"value-quantity": "150"}, "", "quantity-precision-excludes"),
    row("Observation", {"value-quantity:missing": "true"}, "o4 o5", "quantity-missing"),
    # reference
    row("Encounter", {"subject": f"Patient/{_rid('p1')}"}, "e1 e2", "reference-type-id"),
    row("Encounter", {"subject": _rid("p1")}, "e1 e2", "reference-bare-id"),
    row("Encounter", {"subject:Patient": _rid("p1")}, "e1 e2", "reference-type-modifier"),
    row("Encounter", {"subject:Group": _rid("p1")}, "", "reference-wrong-type-modifier"),
    row("Encounter", {"patient": _rid("p2")}, "e3", "reference-patient"),
    row(
        "Patient",
        {"general-practitioner": f"Practitioner/{_rid('prac-a')}"},
        "p1 p3",
        "reference-gp",
    ),
    row("Patient", {"organization:missing": "false"}, "p3", "reference-missing"),
    row("Observation", {"encounter": f"Encounter/{_rid('e1')}"}, "o1", "reference-encounter"),
    # uri
    row("Questionnaire", {"url": f"{Q}/phq9"}, "q1", "uri-exact"),
    row("Questionnaire", {"url:below": Q}, "q1 q2", "uri-below"),
    row("Questionnaire", {"url:above": f"{Q}/phq9/v2"}, "q1", "uri-above"),
    # composite: the components match within one repetition (one Observation.component)
    row("Observation", {"code-value-quantity": f"{LOINC}|8480-6$gt140"}, "o2", "composite"),
    row("Observation", {"code-value-quantity": f"{LOINC}|8480-6$lt100"}, "", "composite-no"),
    row(
        "Observation",
        {"component-code-value-quantity": f"{LOINC}|8462-4$lt90"},
        "o4 o5",
        "composite-component",
    ),
    row(
        "Observation",
        {"component-code-value-quantity": f"{LOINC}|8480-6$lt90"},
        "o5",
        "composite-component-same-repetition",
    ),
    row(
        "Observation",
        {"component-code-value-quantity": f"{LOINC}|8480-6$gt100|{UCUM}|mm[Hg]"},
        "o4",
        "composite-component-quantity-unit",
    ),
    row(
        "Observation",
        {"component-code-value-quantity": "8480-6$lt90,8462-4$gt80"},
        "o4 o5",
        "composite-or",
    ),
    row(
        "Observation",
        {"component-code-value-concept": f"{LOINC}|8361-8${SNOMED}|{SITTING}"},
        "o5",
        "composite-concept",
    ),
    row(
        "Observation",
        {"component-code-value-concept": f"{LOINC}|8480-6${SNOMED}|{SITTING}"},
        "",
        "composite-concept-other-repetition",
    ),
    row(
        "Observation",
        {"combo-code-value-quantity": f"{LOINC}|8480-6$gt125"},
        "o2 o4",
        "composite-combo",
    ),
    row(
        "Observation",
        {"combo-code-value-quantity": f"{LOINC}|8480-6$lt90"},
        "o5",
        "composite-combo-same-repetition",
    ),
    # the common parameters of meta
    row(
        "Patient",
        {"_profile": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"},
        "p1",
        "profile",
    ),
    row("Patient", {"_security": "R"}, "p1", "security"),
    row("Patient", {"_source": f"urn:test:source:{RUN}"}, "p1", "source"),
    row("Patient", {"_profile:missing": "true"}, "p2 p3", "profile-missing"),
    # _id and AND of parameters
    row("Patient", {"_id": f"{_rid('p1')},{_rid('p2')}"}, "p1 p2", "id-or"),
    row("Patient", {"_id:not": _rid("p1")}, "p2 p3", "id-not"),
    row("Patient", {"name": "lovel", "gender": "other"}, "p3", "and-of-parameters"),
    # chains, to any depth
    row("Encounter", {"subject:Patient.name": "lovelace"}, "e1 e2", "chain-typed"),
    row("Encounter", {"subject.name": "nunez"}, "e3", "chain-untyped"),
    row("Encounter", {"patient.general-practitioner.name": "greene"}, "e1 e2", "chain-two-levels"),
    row(
        "Observation",
        {"subject:Patient.general-practitioner:Practitioner.family": "brown"},
        "o3 o5",
        "chain-two-levels-typed",
    ),
    row("Observation", {"encounter.class": "EMER"}, "o1", "chain-token"),
    row("Observation", {"patient.birthdate": "lt1986"}, "o1 o2 o4", "chain-date"),
    # reverse chains
    row("Patient", {"_has:Observation:patient:code": f"{LOINC}|29463-7"}, "p2", "has"),
    row("Patient", {"_has:Encounter:subject:class": "EMER"}, "p1", "has-token"),
    row(
        "Practitioner",
        {"_has:Patient:general-practitioner:_has:Encounter:subject:class": "IMP"},
        "prac-b",
        "has-nested",
    ),
]


@pytest.mark.parametrize(("path", "query", "expected"), SEARCHES)
def test_search(
    client: httpx.Client, corpus: None, path: str, query: dict[str, str], expected: set[str]
) -> None:
    assert set(_search(client, path, query)) == expected


def test_composite_criteria_are_anded(client: httpx.Client, corpus: None) -> None:
    """Each repetition of a composite parameter may match a different component."""
    params = [
        ("component-code-value-quantity", f"{LOINC}|8480-6$gt120"),
        ("component-code-value-quantity", f"{LOINC}|8462-4$gt80"),
        ("_tag", TAG),
    ]
    bundle = client.get("Observation", params=params).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [_rid("o4")]


def test_system_search_by_type(client: httpx.Client, corpus: None) -> None:
    assert set(_search(client, "", {"_type": "Questionnaire,RiskAssessment"})) == {
        "q1", "q2", "r1", "r2",
    }  # fmt: skip


SORTS = [
    pytest.param("Patient", "birthdate", ["p1", "p2", "p3"], id="date-asc-missing-last"),
    pytest.param("Patient", "-birthdate", ["p2", "p1", "p3"], id="date-desc"),
    pytest.param("Patient", "family", ["p1", "p3", "p2"], id="string-asc"),
    pytest.param("Patient", "-family", ["p2", "p3", "p1"], id="string-desc"),
    pytest.param("Patient", "gender,-birthdate", ["p1", "p2", "p3"], id="two-keys"),
    pytest.param(
        "Observation", "-date", ["o2", "o1", "o3", "o4", "o5"], id="observation-date-desc"
    ),
    pytest.param("Observation", "value-quantity", ["o3", "o1", "o2", "o4", "o5"], id="quantity"),
    pytest.param("RiskAssessment", "-probability", ["r2", "r1"], id="number-desc"),
    pytest.param("Patient", "_id", ["p1", "p2", "p3"], id="id"),
]


@pytest.mark.parametrize(("path", "sort", "expected"), SORTS)
def test_sort_and_paging_keep_the_order(
    client: httpx.Client, corpus: None, path: str, sort: str, expected: list[str], base: str
) -> None:
    assert _search(client, path, {"_sort": sort}) == expected
    # One per page, following next links: the same order, each exactly once.
    url: str | None = f"{base}/{path}"
    params: dict[str, str] | None = {"_sort": sort, "_tag": TAG, "_count": "1"}
    seen: list[str] = []
    while url:
        bundle = httpx.get(url, params=params).json()
        params = None
        seen += [e["resource"]["id"].removesuffix(f"-{RUN}") for e in bundle.get("entry", [])]
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
    assert seen == expected


def test_paging_through_a_changing_set(client: httpx.Client, base: str) -> None:
    tag = f"urn:test:paging|{uuid.uuid4().hex}"
    system, code = tag.split("|")
    member = client.put("Patient/any", json={"resourceType": "Patient", "id": "any"}, headers=FHIR)
    assert member.status_code in (200, 201), member.text

    def goal(n: int) -> str:
        body = {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": f"goal {n}"},
            "subject": {"reference": "Patient/any"},
            "meta": {"tag": [{"system": system, "code": code}]},
        }
        return str(client.post("Goal", json=body, headers=FHIR).json()["id"])

    originals = [goal(n) for n in range(6)]
    page = client.get("Goal", params={"_tag": tag, "_count": "2"}).json()
    seen = [e["resource"]["id"] for e in page["entry"]]
    assert seen == originals[:2]
    client.delete(f"Goal/{originals[0]}")  # already seen
    client.delete(f"Goal/{originals[4]}")  # not yet seen
    added = [goal(n) for n in (6, 7)]
    url = next(lk["url"] for lk in page["link"] if lk["relation"] == "next")
    while url:
        page = httpx.get(url).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), "")
    assert len(seen) == len(set(seen))
    assert set(seen) == (set(originals) - {originals[4]}) | set(added)


def test_post_search_with_chain(client: httpx.Client, corpus: None) -> None:
    response = client.post(
        "Encounter/_search", data={"subject:Patient.name": "lovelace", "_tag": TAG}
    )
    assert response.status_code == 200
    ids = {e["resource"]["id"] for e in response.json()["entry"]}
    assert ids == {_rid("e1"), _rid("e2")}


ERRORS = [
    pytest.param("Patient", {"birthdate": "notadate"}, "birthdate", id="bad-date"),
    pytest.param("Observation", {"value-quantity": "gtabc"}, "value-quantity", id="bad-quantity"),
    pytest.param("RiskAssessment", {"probability": "x1"}, "probability", id="bad-number"),
    pytest.param("Patient", {"_count": "-1"}, "_count", id="negative-count"),
    pytest.param("Patient", {"_sort": "unknown"}, "_sort", id="unknown-sort"),
    pytest.param("Patient", {"gender:in": "http://x"}, "gender", id="unsupported-modifier"),
    pytest.param("Patient", {"name:below": "x"}, "name", id="wrong-modifier"),
    pytest.param("Patient", {"_has:Spaceship:pilot:name": "x"}, "_has", id="has-unknown-type"),
    pytest.param("Patient", {"_has:Observation:code:code": "x"}, "_has", id="has-not-reference"),
    pytest.param("Encounter", {"subject:Spaceship.name": "x"}, "subject", id="chain-bad-type"),
    pytest.param(
        "Patient", {"general-practitioner.a.b.c.d.e": "x"}, "general", id="chain-too-deep"
    ),
    pytest.param("Patient", {"birthdate:missing": "maybe"}, "birthdate", id="missing-not-boolean"),
    pytest.param(
        "Observation", {"code-value-quantity": "x|y"}, "code-value-quantity", id="composite-arity"
    ),
    pytest.param("Patient", {"_include": "Patient:name"}, "_include", id="include-not-reference"),
]


@pytest.mark.parametrize(("path", "query", "named"), ERRORS)
def test_malformed_search_is_400(
    client: httpx.Client, path: str, query: dict[str, str], named: str
) -> None:
    response = client.get(path, params=query)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert named in response.text
