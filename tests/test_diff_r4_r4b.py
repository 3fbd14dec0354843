"""scripts/diff_r4_r4b.py over two small hand-made packages: what it reports as different,
how it expands required value sets, and that inherited invariants are reported once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "diff_r4_r4b", ROOT / "scripts" / "diff_r4_r4b.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SD = "http://hl7.org/fhir/StructureDefinition/"


def element(path: str, *types: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"path": path, "min": 0, "max": "1"}
    if types:
        item["type"] = [{"code": code} for code in types]
    item.update(extra)
    return item


def structure(name: str, elements: list[dict[str, Any]], kind: str = "resource") -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": SD + name,
        "type": name,
        "kind": kind,
        "derivation": "specialization",
        "snapshot": {"element": [element(name), *elements]},
    }


def reference(*targets: str) -> dict[str, Any]:
    return {"code": "Reference", "targetProfile": [SD + target for target in targets]}


def write(folder: Path, *items: dict[str, Any]) -> Path:
    folder.mkdir()
    for item in items:
        name = item.get("type") or item["url"].rsplit("/", 1)[1]
        (folder / f"{item['resourceType']}-{name}.json").write_text(json.dumps(item))
    return folder


def code_system(url: str, *codes: str) -> dict[str, Any]:
    concepts = [{"code": code} for code in codes]
    # a nested concept counts too
    concepts[-1]["concept"] = [{"code": codes[-1] + "-child"}]
    return {"resourceType": "CodeSystem", "url": url, "concept": concepts}


def value_set(url: str, system: str) -> dict[str, Any]:
    return {"resourceType": "ValueSet", "url": url, "compose": {"include": [{"system": system}]}}


STATUS = "http://hl7.org/fhir/ValueSet/thing-status"
STATUS_CS = "http://hl7.org/fhir/thing-status"


def binding(strength: str, url: str) -> dict[str, Any]:
    return {"binding": {"strength": strength, "valueSet": url + "|4.0.1"}}


@pytest.fixture
def packages(tmp_path: Path, script: ModuleType) -> tuple[Any, Any]:
    dom_r4 = {"key": "dom-3", "severity": "error", "expression": "old"}
    dom_r4b = {"key": "dom-3", "severity": "error", "expression": "new"}
    r4 = write(
        tmp_path / "r4",
        structure(
            "Thing",
            [
                element("Thing.status", "code", min=1, **binding("required", STATUS)),
                element("Thing.subject", constraint=[dom_r4], type=[reference("Patient")]),
                element("Thing.old", "string"),
                element("Thing.item", "BackboneElement", max="*"),
                element("Thing.item.value[x]", "string", "Meta"),
            ],
        ),
        structure("Gone", []),
        code_system(STATUS_CS, "active", "retired"),
        value_set(STATUS, STATUS_CS),
    )
    r4b = write(
        tmp_path / "r4b",
        structure(
            "Thing",
            [
                element("Thing.status", "code", min=1, **binding("required", STATUS)),
                element(
                    "Thing.subject", constraint=[dom_r4b], type=[reference("Patient", "Group")]
                ),
                element("Thing.item", "BackboneElement", max="1"),
                element("Thing.item.value[x]", "string", "CodeableReference"),
                element("Thing.new", "string", **binding("example", STATUS)),
            ],
        ),
        structure("Added", []),
        code_system(STATUS_CS, "active", "draft"),
        value_set(STATUS, STATUS_CS),
    )
    return script.Package(r4), script.Package(r4b)


def test_a_structure_diff_names_each_kind_of_difference(
    script: ModuleType, packages: tuple[Any, Any]
) -> None:
    r4, r4b = packages
    assert r4.resource_types() == {"Thing", "Gone"}
    found = script.diff_structure("Thing", r4, r4b)

    assert found["elementsOnlyInR4"] == ["Thing.old"]
    assert found["elementsOnlyInR4B"] == ["Thing.new"]
    assert found["cardinality"] == [{"path": "Thing.item", "r4": "0..*", "r4b": "0..1"}]
    assert found["types"] == [
        {
            "path": "Thing.item.value[x]",
            "r4": ["Meta", "string"],
            "r4b": ["CodeableReference", "string"],
        }
    ]
    assert found["targets"] == [{"path": "Thing.subject", "onlyInR4": [], "onlyInR4B": ["Group"]}]
    [status] = found["bindings"]
    assert status["path"] == "Thing.status"
    assert status["codesOnlyInR4"] == ["retired", "retired-child"]
    assert status["codesOnlyInR4B"] == ["draft", "draft-child"]
    # dom-3 belongs to DomainResource: not reported on every resource
    assert "constraints" not in found


def test_required_bindings_of_code_elements(script: ModuleType, packages: tuple[Any, Any]) -> None:
    r4, _ = packages
    document = script.required_bindings(r4, "4.0.1")
    assert document["fhirVersion"] == "4.0.1"
    assert document["bindings"] == {
        "Thing.status": {"valueSet": STATUS, "codes": ["active", "retired", "retired-child"]}
    }


def test_a_value_set_with_a_filter_is_not_expanded(script: ModuleType, tmp_path: Path) -> None:
    filtered = {
        "resourceType": "ValueSet",
        "url": STATUS,
        "compose": {"include": [{"system": STATUS_CS, "filter": [{"op": "is-a"}]}]},
    }
    package = script.Package(write(tmp_path / "p", code_system(STATUS_CS, "a"), filtered))
    assert package.expand(STATUS) is None
    assert package.expand("http://nowhere/ValueSet/x") is None
