"""The walk refuses exactly what the fhir.resources models refused: the validation of every
example resource and of generated invalid mutations, run both ways (`models=True` builds
the pydantic model as every write did before; the default walks the JSON only).

Deliberate differences (each has a test below): a `uuid` of any UUID version is accepted
(the models wanted version 4; the FHIR regex and the HL7 validator take any).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cmfhir.errors import InvalidResource
from cmfhir.resources import ResourceValidator, parse_json
from cmfhir.resources._elements import PRIMITIVE, RESOURCE, STRING, Element, ElementTables, Table

ROOT = Path(__file__).parents[2]
PROFILES = ROOT / "profiles"
DATA = ROOT / "tests" / "data"
SHARED_SYNTHEA = Path("/work/shared/data/synthea")

WALK = ResourceValidator.from_profiles(PROFILES)
MODELS = ResourceValidator.from_profiles(PROFILES, models=True)


def _bundle_resources(path: Path) -> list[dict[str, Any]]:
    bundle = parse_json(path.read_bytes())
    return [entry["resource"] for entry in bundle["entry"] if "resource" in entry]


def _examples() -> list[dict[str, Any]]:
    with gzip.open(DATA / "fhir-examples" / "r4b-examples.ndjson.gz") as lines:
        # Not parse_json: the examples were re-serialized from floats, and one reads 1e-245.
        resources = [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]
    for path in sorted((DATA / "r4-examples").glob("*.json")):
        resources.append(parse_json(path.read_bytes()))
    for path in sorted((DATA / "synthea").glob("*.json")):
        resources += _bundle_resources(path)
    return resources


EXAMPLES = _examples()


def _refuses(validator: ResourceValidator, resource: Any) -> list[str] | None:
    """The locations of the problems found, None when valid."""
    try:
        validator.validate(resource, stored=False)
    except InvalidResource as error:
        return [issue.expression[0] if issue.expression else "" for issue in error.issues]
    return None


def _differences(resources: list[Any]) -> list[str]:
    found = []
    for resource in resources:
        walk, models = _refuses(WALK, resource), _refuses(MODELS, resource)
        if (walk is None) != (models is None):
            text = json.dumps(resource, default=str)[:300]
            found.append(f"walk {walk} / models {models}: {text}")
    return found


def test_examples_are_judged_alike() -> None:
    assert len(EXAMPLES) > 600
    assert _differences(EXAMPLES) == []


@pytest.mark.skipif(not SHARED_SYNTHEA.is_dir(), reason="the shared Synthea data is absent")
def test_shared_synthea_is_judged_alike() -> None:
    """Every 5th resource (CMFHIR_FULL_EQUIVALENCE=1: all 5,312, some 10 s of CPU)."""
    resources = []
    for path in sorted(SHARED_SYNTHEA.glob("*.json")):
        resources += _bundle_resources(path)
    if os.environ.get("CMFHIR_FULL_EQUIVALENCE") != "1":
        resources = resources[::5]
    assert _differences(resources) == []


# --- mutations ----------------------------------------------------------------------------

TABLES = ElementTables({})


BAD_DATES = {
    "date": [
        "2021-02-30",
        "2019-02-29",
        "2021-13-01",
        "2021-1-1",
        "20210101",
        "2021-01-01T00:00:00Z",
    ],
    "dateTime": [
        "2021-02-30",
        "2021-04-31T10:00:00Z",
        "2021-01-01T10:00:00",
        "2021-01-01T24:00:00Z",
        "2021-01-01T10:00Z",
        "2021-01-01T10:00:00+15:00",
        "0000",
        "2021-00",
    ],
    "instant": [
        "2021-01-01",
        "2021-02-29T10:00:00Z",
        "2021-01-01T10:00:00",
        "2021-01-01T10:00:61Z",
    ],
    "time": ["24:00:00", "10:00", "10:00:00Z", "10:60:00"],
}
GOOD_DATES = {
    "date": ["2020-02-29", "1900", "2000-02"],
    "dateTime": ["2020-02-29", "2016-12-31T23:59:60Z", "2021-01-01T10:00:00.1234567-13:59", "0001"],
    "instant": ["2016-12-31T23:59:60+14:00", "2000-02-29T00:00:00.5Z"],
    "time": ["23:59:60", "00:00:00.000"],
}
INTEGERS = {
    "integer": [2**31, -(2**31) - 1, 2**31 - 1, -(2**31), Decimal("1.5"), True],
    "unsignedInt": [-1, 0, 2**31, 2**31 - 1],
    "positiveInt": [0, 1, -5, 2**31],
    "decimal": [Decimal("1E+2"), True, "1.5", 2**40],
}
STRINGS = ["\x0b", "\u00a0\u2028", "\x1c", " \x0b", " ", "a\x0bb", "\t"]
WRONG_TYPES = [5, True, "x", {"a": 1}, [1], None]


def _mutations(resource: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """Copies of `resource`, each with one change made at a site picked at random."""
    root = TABLES.for_type(resource["resourceType"])
    # Paths to sites, so that each mutation is made on a fresh copy.
    sites: list[tuple[list[Any], str, Element, Table]] = []
    tables: list[tuple[list[Any], Table]] = [([], root)]

    def collect(obj: dict[str, Any], table: Table, trail: list[Any], depth: int) -> None:
        for key, value in obj.items():
            element = table.elements.get(key)
            if element is None:
                continue
            sites.append((trail, key, element, table))
            if depth > 12 or (element.model is None and element.kind != RESOURCE):
                continue
            items = list(enumerate(value)) if type(value) is list else [(None, value)]
            for index, item in items:
                if type(item) is not dict:
                    continue
                here = [*trail, key] if index is None else [*trail, key, index]
                if element.kind == RESOURCE:
                    kind = item.get("resourceType")
                    if isinstance(kind, str):
                        child = TABLES.for_type(kind)
                        tables.append((here, child))
                        collect(item, child, here, depth + 1)
                elif element.model is not None:
                    child = TABLES.table(element.model)
                    tables.append((here, child))
                    collect(item, child, here, depth + 1)

    collect(resource, root, [], 0)

    def at(copied: dict[str, Any], trail: list[Any]) -> Any:
        node: Any = copied
        for step in trail:
            node = node[step]
        return node

    def pick(candidates: list[Any], count: int) -> list[Any]:
        return rng.sample(candidates, min(count, len(candidates)))

    # A required element dropped (or replaced by an extension, or an id only).
    for trail, table in pick([t for t in tables if t[1].required], 3):
        for key, ext_key, _ in table.required:
            obj = at(resource, trail)
            if key not in obj:
                continue
            changed = copy.deepcopy(resource)
            del at(changed, trail)[key]
            yield changed
            if ext_key is not None:
                absent = {"extension": [{"url": "http://x.org/e", "valueCode": "unknown"}]}
                for stand_in in (absent, {"id": "a"}):
                    changed = copy.deepcopy(resource)
                    target = at(changed, trail)
                    del target[key]
                    target[ext_key] = stand_in
                    yield changed
    # Primitive values: bad and good dates, ranges, strings, wrong JSON types.
    primitives = [s for s in sites if s[2].kind == PRIMITIVE]
    for trail, key, element, _ in pick(primitives, 4):
        values: list[Any] = [*BAD_DATES.get(element.type_name, ())]
        values += GOOD_DATES.get(element.type_name, ())
        values += INTEGERS.get(element.type_name, ())
        if element.json_kind == STRING:
            values += STRINGS
        values += rng.sample(WRONG_TYPES, 2)
        for value in values:
            changed = copy.deepcopy(resource)
            obj = at(changed, trail)
            obj[key] = [value] if element.is_list else value
            yield changed
    # Arrays where one value goes and the reverse.
    for trail, key, _, _ in pick(sites, 3):
        changed = copy.deepcopy(resource)
        obj = at(changed, trail)
        value = obj[key]
        obj[key] = value[0] if type(value) is list else [value]
        yield changed
    # Unknown elements, bad choice suffixes, a second type of a choice.
    for trail, _ in pick(tables, 2):
        changed = copy.deepcopy(resource)
        at(changed, trail)["colour"] = "red"
        yield changed
    for trail, key, element, table in pick([s for s in sites if s[2].choice], 2):
        changed = copy.deepcopy(resource)
        obj = at(changed, trail)
        obj[f"{element.choice}Colour"] = obj.pop(key)
        yield changed
        changed = copy.deepcopy(resource)
        obj = at(changed, trail)
        other = next(
            k for k, e in table.elements.items() if e.choice == element.choice and k != key
        )
        obj[other] = obj[key]
        yield changed
    # Contained resources of an unknown type or with a problem of their own.
    if resource["resourceType"] not in ("Bundle", "Parameters", "Binary"):
        for contained in (
            {"resourceType": "Robot", "id": "r"},
            {"resourceType": "Observation", "id": "o"},
        ):
            changed = copy.deepcopy(resource)
            changed["contained"] = [contained]
            changed.setdefault("extension", []).append(
                {"url": "http://x.org/e", "valueReference": {"reference": "#" + contained["id"]}}
            )
            yield changed


def _mutation_corpus() -> list[dict[str, Any]]:
    rng = random.Random(20261130)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in EXAMPLES:
        # Small enough that copying and validating thousands of copies stays cheap.
        if len(json.dumps(resource, default=str)) < 6000:
            by_type.setdefault(resource["resourceType"], []).append(resource)
    bases = []
    for kind in sorted(by_type):
        bases += rng.sample(by_type[kind], min(1, len(by_type[kind])))
    return [changed for base in bases for changed in _mutations(base, rng)]


def test_mutations_are_judged_alike() -> None:
    mutations = _mutation_corpus()
    refused = sum(_refuses(WALK, resource) is not None for resource in mutations)
    # A generator that made only valid (or only invalid) documents would prove nothing.
    assert len(mutations) > 1500
    assert len(mutations) * 0.5 < refused < len(mutations)
    differences = _differences(mutations)
    assert differences == [], f"{len(differences)} differ, e.g. {differences[:5]}"


# --- deliberate differences ---------------------------------------------------------------


def test_a_uuid_of_any_version_is_accepted() -> None:
    """FHIR's uuid regex (and the HL7 validator) take any version; the models wanted v4."""
    resource = {
        "resourceType": "Patient",
        "extension": [
            {"url": "http://x.org/e", "valueUuid": "urn:uuid:c757873d-ec9a-1326-a141-556f43239520"}
        ],
    }
    WALK.validate(resource)
    with pytest.raises(InvalidResource) as caught:
        MODELS.validate(resource)
    assert caught.value.issues[0].expression == ("Patient.extension[0].valueUuid",)


# --- the walk's own messages for what the models found ------------------------------------

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "BMI"}}
ABSENT = {
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "unknown",
        }
    ]
}


@pytest.mark.parametrize(
    ("resource", "location", "message"),
    [
        pytest.param(
            {"resourceType": "Patient", "birthDate": "2019-02-29"},
            "Patient.birthDate",
            "not a valid FHIR date: no such day",
            id="not-a-leap-year",
        ),
        pytest.param(
            {**OBS, "issued": "2021-01-01T10:00:00"},
            "Observation.issued",
            "not a valid FHIR instant",
            id="instant-without-zone",
        ),
        pytest.param(
            {**OBS, "valueTime": "24:00:00"},
            "Observation.valueTime",
            "not a valid FHIR time",
            id="time-24",
        ),
        pytest.param(
            {**OBS, "valueSampledData": {"origin": {"value": 1}, "period": 1, "dimensions": 0}},
            "Observation.valueSampledData.dimensions",
            "must be greater than or equal to 1 (FHIR positiveInt)",
            id="positiveInt-zero",
        ),
        pytest.param(
            {"resourceType": "Patient", "name": [{"family": "\u00a0\u2028"}]},
            "Patient.name[0].family",
            "a string must hold more than whitespace",
            id="unicode-whitespace-string",
        ),
        pytest.param(
            {"resourceType": "Observation", "code": {"text": "x"}, "_status": {"id": "a"}},
            "Observation.status",
            "required element is missing",
            id="required-primitive-id-only",
        ),
        pytest.param(
            {"resourceType": "Patient", "_birthDate": {"fhir_comments": "x"}},
            "Patient.birthDate.fhir_comments",
            "unknown element",
            id="primitive-extension-empty",
        ),
    ],
)
def test_the_walk_reports(resource: dict[str, Any], location: str, message: str) -> None:
    assert _refuses(MODELS, resource) is not None
    with pytest.raises(InvalidResource) as caught:
        WALK.validate(resource)
    issue = caught.value.issues[0]
    assert issue.expression == (location,)
    assert issue.diagnostics == f"{location}: {message}"


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param({**OBS, "effectiveDateTime": "2016-12-31T23:59:60Z"}, id="leap-second"),
        pytest.param({"resourceType": "Patient", "birthDate": "2000-02-29"}, id="leap-day"),
        pytest.param(
            {"resourceType": "Observation", "code": {"text": "x"}, "_status": ABSENT},
            id="required-primitive-absent-reason",
        ),
        pytest.param({**OBS, "valueInteger": -(2**31)}, id="integer-lowest"),
    ],
)
def test_the_walk_accepts(resource: dict[str, Any]) -> None:
    assert _refuses(MODELS, resource) is None
    WALK.validate(resource)
