"""A FHIR-aware property-based fuzzer (issue #5): valid care-management resources, built
from seeds and the R4B models (`fhir_model.py`), then broken in the ways clients break
them, sent through create, update, transaction and search on the real server.

The properties: never a 5xx; a resource the server accepts reads back equal as JSON (apart
from `id` and `meta`, which the server owns); one it refuses gets an OperationOutcome and
leaves the database as it was. Runs are derandomized, so CI sees the same examples.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import string
import uuid
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cmfhir.config import Settings
from cmfhir.resources.search_parameters import load_registry

from .checks import FHIR, assert_outcome, count
from .fhir_model import Element, Model, resource_elements
from .fhir_model import elements as model_elements

# FUZZ_EXAMPLES=5000 hunts longer, with fresh random examples each run.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PATIENT = "Patient/{patient}"  # the seeds' member, filled in with a real Patient's id

SEEDS: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
        "active": True,
        "name": [{"use": "official", "family": "Okafor", "given": ["Ada", "N."]}],
        "telecom": [{"system": "phone", "value": "919-555-0100", "use": "home"}],
        "gender": "female",
        "birthDate": "1984-03-12",
        "address": [
            {"line": ["12 Oak St"], "city": "Raleigh", "state": "NC", "postalCode": "27601"}
        ],
    },
    "Encounter": {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003"}]}],
        "subject": {"reference": PATIENT},
        "period": {"start": "2024-01-02T09:00:00Z", "end": "2024-01-02T09:30:00Z"},
    },
    "Observation": {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": PATIENT},
        "effectiveDateTime": "2024-01-02T09:10:00Z",
        "valueQuantity": {
            "value": 72,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    },
    "Condition": {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        "subject": {"reference": PATIENT},
        "onsetDateTime": "2019-06-01",
    },
    "CarePlan": {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "title": "Diabetes care plan",
        "subject": {"reference": PATIENT},
        "period": {"start": "2024-01-01"},
        "activity": [{"detail": {"status": "scheduled", "description": "Monthly HbA1c"}}],
    },
    "Goal": {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "HbA1c below 7%"},
        "subject": {"reference": PATIENT},
        "target": [
            {
                "measure": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "detailQuantity": {"value": 7.0, "unit": "%"},
                "dueDate": "2024-12-31",
            }
        ],
    },
    "CareTeam": {
        "resourceType": "CareTeam",
        "status": "active",
        "name": "Care management team",
        "subject": {"reference": PATIENT},
        "participant": [{"role": [{"text": "care manager"}], "member": {"display": "Jo Smith"}}],
    },
    "EpisodeOfCare": {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "type": [{"text": "Tailored care management"}],
        "patient": {"reference": PATIENT},
        "period": {"start": "2024-01-01"},
    },
    "Communication": {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": PATIENT},
        "sent": "2024-01-05T14:00:00Z",
        "payload": [{"contentString": "Called the member to review the care plan."}],
    },
    "QuestionnaireResponse": {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "https://cmfhir.org/fhir/Questionnaire/engagement",
        "subject": {"reference": PATIENT},
        "authored": "2024-01-05",
        "item": [
            {"linkId": "1", "text": "How are you?", "answer": [{"valueString": "Fine"}]},
            {"linkId": "2", "answer": [{"valueInteger": 3}]},
        ],
    },
    "MedicationStatement": {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]
        },
        "subject": {"reference": PATIENT},
        "effectivePeriod": {"start": "2023-01-01"},
        "dosage": [{"text": "500 mg twice daily"}],
    },
    "MedicationDispense": {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]
        },
        "subject": {"reference": PATIENT},
        "quantity": {"value": 60, "unit": "tablet"},
        "daysSupply": {"value": 30, "system": "http://unitsofmeasure.org", "code": "d"},
        "whenHandedOver": "2024-01-03T10:00:00Z",
    },
    "Appointment": {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2024-02-01T15:00:00Z",
        "end": "2024-02-01T15:30:00Z",
        "participant": [{"actor": {"reference": PATIENT}, "status": "accepted"}],
    },
    "DetectedIssue": {
        "resourceType": "DetectedIssue",
        "status": "preliminary",
        "code": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CAREGAP"}
            ]
        },
        "patient": {"reference": PATIENT},
        "identifiedDateTime": "2024-01-06",
        "detail": "No HbA1c in 12 months",
    },
}
TYPES = sorted(SEEDS)


def seed(resource_type: str, patient: str) -> dict[str, Any]:
    text = json.dumps(SEEDS[resource_type]).replace(PATIENT, patient)
    loaded: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return loaded


# --- JSON out, JSON compared ---------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A JSON number written exactly as `text` (`1e4000`, `-0`), which no Python number
    serializes to."""

    text: str


def to_json(document: Any) -> bytes:
    """The document as JSON; `ensure_ascii` writes lone surrogates as `\\ud800` escapes."""
    token = uuid.uuid4().hex
    numbers: list[str] = []

    def default(value: Any) -> str:
        if isinstance(value, Number):
            numbers.append(value.text)
        elif isinstance(value, Decimal):
            numbers.append(str(value))
        else:
            raise TypeError(type(value).__name__)
        return f"{token}:{len(numbers) - 1}"

    text = json.dumps(document, default=default, ensure_ascii=True)
    for index, number in enumerate(numbers):
        text = text.replace(f'"{token}:{index}"', number, 1)
    return text.encode()


def content(body: bytes) -> Any:
    """Parsed for comparison: exact decimals, and the server's own `id` and `meta` left out."""
    parsed = json.loads(body, parse_float=Decimal)
    if isinstance(parsed, dict):
        parsed.pop("id", None)
        parsed.pop("meta", None)
    return parsed


# --- strategies from the R4B models --------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
)
TOKEN = st.from_regex(r"[a-z][a-z0-9\-]{0,12}", fullmatch=True)
URI = st.from_regex(r"https?://example\.org/[a-z0-9/]{0,20}", fullmatch=True)
DATE = st.dates().map(lambda d: d.isoformat())
INSTANT = st.datetimes(timezones=st.just(UTC)).map(
    lambda d: d.isoformat(timespec="milliseconds").replace("+00:00", "Z")
)
XHTML = TEXT.map(
    lambda t: (
        '<div xmlns="http://www.w3.org/1999/xhtml">'
        + "".join(c for c in t if c.isalnum())
        + "</div>"
    )
)

PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "unsignedInt": st.integers(0, 2**31 - 1),
    "positiveInt": st.integers(1, 2**31 - 1),
    "decimal": st.one_of(
        st.integers(-(10**6), 10**6).map(str),
        st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    ).map(Number),
    "id": st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    "uri": URI,
    "url": URI,
    "canonical": URI,
    "oid": st.integers(1, 10**6).map(lambda n: f"urn:oid:1.2.{n}"),
    "uuid": st.uuids().map(lambda u: f"urn:uuid:{u}"),
    "date": DATE,
    "dateTime": st.one_of(DATE, INSTANT),
    "instant": INSTANT,
    "time": st.times().map(lambda t: t.strftime("%H:%M:%S")),
    "base64Binary": st.binary(min_size=1, max_size=30).map(lambda b: base64.b64encode(b).decode()),
    "xhtml": XHTML,
}
CODING = st.fixed_dictionaries({"system": URI, "code": TOKEN}, optional={"display": TEXT})
NOT_GENERATED = {"id", "meta", "contained", "extension", "modifierExtension", "implicitRules"}


def primitive(element: Element) -> st.SearchStrategy[Any]:
    assert isinstance(element.type, str)
    if element.type == "code":
        return st.sampled_from(element.codes) if element.codes else TOKEN
    return PRIMITIVES.get(element.type, TEXT)


def special(model: Model, patient: str) -> st.SearchStrategy[Any] | None:
    """Datatypes with rules the model annotations do not spell (a choice that is required)."""
    name = model.__name__
    if name == "Reference":
        return st.sampled_from(
            [{"reference": patient}, {"display": "someone"}, {"reference": "Practitioner/p1"}]
        )
    if name == "Extension":
        return st.fixed_dictionaries(
            {"url": URI, "valueString": TEXT}, optional={"id": PRIMITIVES["id"]}
        )
    if name == "Narrative":
        return st.fixed_dictionaries({"status": st.just("generated"), "div": XHTML})
    if name == "Resource":  # a contained resource
        return st.just({"resourceType": "Basic", "id": "c1", "code": {"text": "contained"}})
    if name == "Meta":
        return st.fixed_dictionaries({"tag": st.lists(CODING, min_size=1, max_size=2)})
    return None


def value(element: Element, patient: str, depth: int) -> st.SearchStrategy[Any]:
    if isinstance(element.type, str):
        single = primitive(element)
    else:
        datatype = special(element.type, patient)
        single = complex_value(element.type, patient, depth) if datatype is None else datatype
    return st.lists(single, min_size=1, max_size=2) if element.is_list else single


@st.composite
def complex_value(draw: st.DrawFn, model: Model, patient: str, depth: int) -> dict[str, Any]:
    """Required elements, and up to two optional ones, of a datatype or backbone element;
    below three levels only primitives (some required elements may then be missing)."""
    elements = [e for e in model_elements(model) if e.key not in NOT_GENERATED]
    allowed = [e for e in elements if isinstance(e.type, str) or depth < 3]
    out: dict[str, Any] = {}
    for element in allowed:
        if element.required:
            out[element.key] = draw(value(element, patient, depth + 1))
    optional = [e for e in allowed if not e.required]
    if optional:
        chosen = draw(st.lists(st.sampled_from(optional), max_size=2, unique_by=lambda e: e.key))
        for element in chosen or [optional[0]]:
            out[element.key] = draw(value(element, patient, depth + 1))
    return out


# --- mutations -----------------------------------------------------------------------------

Location = tuple[Any, Any]  # (container, key or index)


def locations(node: Any) -> list[Location]:
    found: list[Location] = []
    stack = [node]
    while stack:
        current = stack.pop()
        items = current.items() if isinstance(current, dict) else enumerate(current)
        for key, child in items:
            found.append((current, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return found


def objects(node: Any) -> list[dict[str, Any]]:
    found = [node] if isinstance(node, dict) else []
    for container, key in locations(node):
        if isinstance(container[key], dict):
            found.append(container[key])
    return found


def _random_text(size: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + " é€😀") for _ in range(size))


BROKEN_REFERENCES = [
    "Patient/",
    "Patient/x/y/z",
    "Nope/1",
    "#missing",
    "urn:uuid:not-a-uuid",
    "Patient/" + "a" * 65,
    "http://",
    "Patient/../../etc/passwd",
    "Patient?identifier=x",
    " Patient/1",
    "Patient/1 ",
    "Patient/1/_history/x",
    "patient/1",
]
ANY_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    TEXT,
    st.just([]),
    st.just({}),
    st.just([1, "a", None]),
    st.just({"a": {"b": 1}}),
    st.sampled_from(["1e4000", "-0", "1e-5000", "9" * 5000, "0.1"]).map(Number),
)
STRING_INSERTS = {
    "nul": st.just("\x00"),
    "surrogate": st.sampled_from(["\ud800", "\udfff", "\udc00\ud800"]),
    "control": st.sampled_from(["\x01", "\x1f", "\x7f", "\u2028", "\ufeff", "\u202e"]),
    "unicode": st.sampled_from(["😀", "\U0001d518", "中文", "e\u0301", "\U0010ffff"]),
    "whitespace": st.sampled_from([" ", "\t", "\n", "  "]),
}
# Changes a valid resource may survive, and changes it should not.
KEEPING = ["add", "oversized", "unicode", "control", "whitespace", "primitive-extension"]
KEEPING += ["contained"]
BREAKING = [
    "drop",
    "wrong-type",
    "unknown-element",
    "bad-code",
    "broken-reference",
    "empty",
    "deep",
    "nul",
    "surrogate",
]
MUTATIONS = st.one_of(
    st.lists(st.sampled_from(KEEPING), min_size=1, max_size=3),
    st.lists(st.sampled_from(KEEPING + BREAKING), min_size=1, max_size=3),
)


def mutate(data: st.DataObject, document: dict[str, Any], patient: str) -> list[str]:
    """Apply one to three mutations; return what was done, for the failure report."""
    done = []
    for kind in data.draw(MUTATIONS):
        places = [p for p in locations(document) if p != (document, "resourceType")]
        strings = [p for p in places if isinstance(p[0][p[1]], str)]
        if kind == "add":
            present = set(document)
            choices = [
                e
                for e in resource_elements(document["resourceType"])
                if e.key not in present and e.key not in NOT_GENERATED
            ]
            element = data.draw(st.sampled_from(choices))
            document[element.key] = data.draw(value(element, patient, 0))
            kind += f" {element.key}"
        elif kind == "drop" and places:
            container, key = data.draw(st.sampled_from(places))
            del container[key]
        elif kind == "wrong-type" and places:
            container, key = data.draw(st.sampled_from(places))
            container[key] = data.draw(ANY_JSON)
        elif kind == "unknown-element":
            target = data.draw(st.sampled_from(objects(document)))
            target[data.draw(st.from_regex(r"[a-z][A-Za-z]{0,10}", fullmatch=True))] = 1
        elif kind == "bad-code" and strings:
            container, key = data.draw(st.sampled_from(strings))
            container[key] = data.draw(st.sampled_from(["not-a-code", " active", "", "ACTIVE"]))
        elif kind == "broken-reference":
            references = [o for o in objects(document) if "reference" in o]
            target = data.draw(st.sampled_from(references or objects(document)))
            target["reference"] = data.draw(st.sampled_from(BROKEN_REFERENCES))
        elif kind == "oversized":
            size = data.draw(st.sampled_from([3_000, 50_000, 500_000]))
            long_text = _random_text(size, seed=size)
            if strings:
                container, key = data.draw(st.sampled_from(strings))
                container[key] = long_text
            else:
                document["language"] = long_text
        elif kind == "empty" and places:
            container, key = data.draw(st.sampled_from(places))
            container[key] = data.draw(st.sampled_from([[], {}, ""]))
        elif kind == "deep":
            levels = data.draw(st.sampled_from([5, 30, 120]))
            nested: dict[str, Any] = {"url": "http://example.org/e", "valueString": "x"}
            for _ in range(levels):
                nested = {"url": "http://example.org/e", "extension": [nested]}
            data.draw(st.sampled_from(objects(document)))["extension"] = [nested]
        elif kind == "primitive-extension" and strings:
            # https://hl7.org/fhir/R4B/json.html#primitive: `_family` beside `family`.
            container, key = data.draw(st.sampled_from(strings))
            extension = {"extension": [{"url": "http://example.org/e", "valueString": "x"}]}
            if isinstance(container, dict):
                container[f"_{key}"] = data.draw(st.sampled_from([extension, {"id": "a"}, {}]))
            else:
                container.append(None)  # a null beside no `_` twin: refused
        elif kind == "contained":
            inner = seed(data.draw(st.sampled_from(TYPES)), patient)
            if data.draw(st.booleans()):
                mutate(data, inner, patient)
            inner["id"] = "c1"
            document["contained"] = [inner]
            target = data.draw(st.sampled_from(objects(document)))
            target["reference"] = "#c1"
        elif kind in STRING_INSERTS and strings:
            container, key = data.draw(st.sampled_from(strings))
            text = container[key]
            at = data.draw(st.integers(0, len(text)))
            container[key] = text[:at] + data.draw(STRING_INSERTS[kind]) + text[at:]
        else:
            continue
        done.append(kind)
    return done


# --- the properties ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patient(client: httpx.Client) -> str:
    created = client.post("Patient", json=SEEDS["Patient"])
    assert created.status_code == 201, created.text
    return f"Patient/{created.json()['id']}"


def check_refused(client: httpx.Client, response: httpx.Response, before: int) -> None:
    assert response.status_code < 500, response.text[:1000]
    assert_outcome(response)
    assert count(client) == before, "a refused request changed the database"


@pytest.mark.parametrize("resource_type", TYPES)
def test_seeds_round_trip(client: httpx.Client, patient: str, resource_type: str) -> None:
    """The seeds are valid, so the fuzzer starts from what the server accepts."""
    body = to_json(seed(resource_type, patient))
    created = client.post(resource_type, content=body, headers=FHIR)
    assert created.status_code == 201, created.text
    assert content(client.get(created.headers["Location"]).content) == content(body)


@FUZZ
@given(data=st.data(), resource_type=st.sampled_from(TYPES))
def test_create(
    client: httpx.Client, patient: str, data: st.DataObject, resource_type: str
) -> None:
    document = seed(resource_type, patient)
    done = mutate(data, document, patient)
    body = to_json(document)
    before = count(client)
    response = client.post(resource_type, content=body, headers=FHIR)
    event(f"status {response.status_code}")
    if response.status_code == 201:
        read = client.get(response.headers["Location"])
        assert content(read.content) == content(body), done
    else:
        check_refused(client, response, before)


@FUZZ
@given(data=st.data(), resource_type=st.sampled_from(TYPES))
def test_update(
    client: httpx.Client, patient: str, data: st.DataObject, resource_type: str
) -> None:
    document = seed(resource_type, patient)
    done = mutate(data, document, patient)
    original = seed(resource_type, patient)
    created = client.post(resource_type, content=to_json(original), headers=FHIR)
    assert created.status_code == 201, created.text
    id = created.json()["id"]
    document["id"] = id
    body = to_json(document)
    before = count(client)
    response = client.put(f"{resource_type}/{id}", content=body, headers=FHIR)
    event(f"status {response.status_code}")
    assert response.status_code < 500, (done, response.text[:1000])
    read = client.get(f"{resource_type}/{id}")
    if response.status_code == 200:
        assert read.json()["meta"]["versionId"] == "2"
        assert content(read.content) == content(body), done
    else:
        check_refused(client, response, before)
        assert read.json()["meta"]["versionId"] == "1", done
        assert content(read.content) == content(to_json(original)), done


def _resolve(document: Any, full_url: str, reference: str) -> Any:
    """The document as stored: references to the Bundle's `fullUrl` rewritten."""
    for container, key in locations(document):
        if key == "reference" and container[key] == full_url:
            container[key] = reference
    return document


@FUZZ
@given(data=st.data(), types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=2))
def test_transaction(
    client: httpx.Client, patient: str, data: st.DataObject, types: list[str]
) -> None:
    member = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": member,
            "resource": seed("Patient", patient),
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    done = []
    for resource_type in types:
        document = seed(resource_type, member)
        done += mutate(data, document, member)
        entries.append({"resource": document, "request": {"method": "POST", "url": resource_type}})
    body = to_json({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    before = count(client)
    response = client.post("", content=body, headers=FHIR)
    event(f"status {response.status_code}")
    if response.status_code != 200:
        check_refused(client, response, before)
        return
    sent = json.loads(body, parse_float=Decimal)["entry"]
    answered = response.json()["entry"]
    assert count(client) == before + len(entries), done
    member_reference = answered[0]["response"]["location"].rsplit("/_history", 1)[0]
    for entry, answer in zip(sent, answered, strict=True):
        stored = client.get(answer["response"]["location"])
        assert stored.status_code == 200
        expected = copy.deepcopy(entry["resource"])
        expected.pop("id", None)
        expected.pop("meta", None)
        assert content(stored.content) == _resolve(expected, member, member_reference), done


# --- search --------------------------------------------------------------------------------

MODIFIERS = ["", ":missing", ":exact", ":contains", ":text", ":not", ":above", ":below", ":in"]
MODIFIERS += [":of-type", ":identifier", ":Patient", ":garbage", ":"]
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx"]
# Percent-escapes sent as they are: not UTF-8, NUL, a surrogate, broken, a superscript two
# (a digit to str.isdigit(), not to int()), a right-to-left override.
RAW_VALUES = ["%ff", "%zz", "%00", "%ED%A0%80", "%", "%2", "%C2%B2", "%E2%80%AE"]
HOSTILE_TEXT = st.one_of(
    TEXT,
    st.sampled_from(["' OR 1=1 --", "1;DROP TABLE resource", "\\", "%", "_", "*", "|", ",", "$"]),
    st.integers(0, 5000).map(lambda n: "a" * n),
)


def _param_value(kind: str) -> st.SearchStrategy[str]:
    """Mostly values of the parameter's type; hostile ones a quarter of the time."""
    if kind == "date":
        valid = st.tuples(st.sampled_from(PREFIXES[:-1]), st.one_of(DATE, INSTANT)).map("".join)
    elif kind in ("number", "quantity"):
        number = st.one_of(
            st.integers().map(str),
            st.decimals(allow_nan=False, allow_infinity=False).map(str),
            st.sampled_from(["1e-5000", "1e5000", "1.50", "-0", "9" * 5000, "1|http://x|mg"]),
        )
        valid = st.tuples(st.sampled_from(PREFIXES[:-1]), number).map("".join)
    elif kind == "token":
        valid = st.one_of(TOKEN, st.tuples(URI, TOKEN).map("|".join), TOKEN.map("|{}".format))
    elif kind == "reference":
        valid = st.sampled_from(["Patient/1", "1", "http://example.org/fhir/Patient/1"])
    elif kind == "uri":
        valid = URI
    else:
        valid = TEXT
    hostile = st.one_of(HOSTILE_TEXT, st.sampled_from(BROKEN_REFERENCES))
    return st.one_of(valid, valid, valid, hostile)


CONTROL_PARAMS: dict[str, st.SearchStrategy[str]] = {
    "_count": st.one_of(st.integers(-5, 10**12).map(str), HOSTILE_TEXT),
    "_sort": st.one_of(TOKEN, TOKEN.map(lambda t: "-" + t), HOSTILE_TEXT),
    "_summary": st.sampled_from(["true", "false", "count", "data", "text", "x"]),
    "_total": st.sampled_from(["none", "estimate", "accurate", "x"]),
    "_elements": st.one_of(TOKEN, HOSTILE_TEXT),
    "_include": st.one_of(st.sampled_from(["*", "*:iterate", "Observation:subject"]), TOKEN),
    "_revinclude": st.one_of(st.sampled_from(["*", "Observation:subject"]), TOKEN),
    "_has": HOSTILE_TEXT,
    "_cursor": HOSTILE_TEXT,
}


def _references(parameters: dict[str, str]) -> list[str]:
    return sorted(code for code, kind in parameters.items() if kind == "reference")


@st.composite
def search_name(
    draw: st.DrawFn, resource_type: str, every: dict[str, dict[str, str]]
) -> tuple[str, str]:
    """A parameter of the type, a chain through one of its references, or a `_has`; with
    the type of the value it takes."""
    parameters = every[resource_type]
    shape = draw(st.sampled_from(["plain", "plain", "chain", "has"]))
    references = _references(parameters)
    if shape == "chain" and references:
        target = draw(st.sampled_from(TYPES))
        code = draw(st.sampled_from(sorted(every[target])))
        typed = draw(st.sampled_from(["", f":{target}"]))
        return f"{draw(st.sampled_from(references))}{typed}.{code}", every[target][code]
    if shape == "has":
        source = draw(st.sampled_from(TYPES))
        back = _references(every[source])
        code = draw(st.sampled_from(sorted(every[source])))
        if back:
            return f"_has:{source}:{draw(st.sampled_from(back))}:{code}", every[source][code]
    code = draw(st.sampled_from(sorted(parameters)))
    modifier = draw(st.sampled_from(MODIFIERS)) if draw(st.integers(0, 3)) == 0 else ""
    return code + modifier, parameters[code]


@st.composite
def search_query(draw: st.DrawFn, resource_type: str, every: dict[str, dict[str, str]]) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 4)) == 0:
            name = draw(st.sampled_from(sorted(CONTROL_PARAMS)))
            text = draw(CONTROL_PARAMS[name])
        else:
            name, kind = draw(search_name(resource_type, every))
            text = draw(_param_value(kind))
        encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
        if draw(st.integers(0, 9)) == 0:
            encoded += draw(st.sampled_from(RAW_VALUES))
        parts.append(f"{quote(name, safe=':')}={encoded}")
    return "&".join(parts)


@pytest.fixture(scope="module")
def search_parameters(settings: Settings) -> dict[str, dict[str, str]]:
    registry = load_registry(settings.profiles_dir)
    return {t: {code: p.type for code, p in registry.for_type(t).items()} for t in TYPES}


@FUZZ
@given(data=st.data(), resource_type=st.sampled_from(TYPES))
def test_search(
    client: httpx.Client,
    search_parameters: dict[str, dict[str, str]],
    data: st.DataObject,
    resource_type: str,
) -> None:
    query = data.draw(search_query(resource_type, search_parameters))
    response = client.get(f"{resource_type}?{query}")
    event(f"status {response.status_code}")
    assert response.status_code < 500, (query, response.text[:1000])
    if response.status_code == 200:
        assert response.json()["resourceType"] == "Bundle"
    else:
        assert_outcome(response)
