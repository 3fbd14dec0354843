"""The OperationDefinitions in profiles/operations/ are valid FHIR and load into the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmfhir.config import default_profiles_dir
from cmfhir.resources.operations import load_operations
from cmfhir.resources.validation import validate_resource

FILES = sorted((default_profiles_dir() / "operations").glob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_definition_is_valid_fhir(path: Path) -> None:
    validate_resource(json.loads(path.read_text()), expected_type="OperationDefinition")


def test_registry() -> None:
    registry = load_operations(default_profiles_dir())
    assert [d.code for d in registry.all()] == [
        "care-gaps",
        "evaluate-measure",
        "events",
        "everything",
        "expand",
        "export",
        "extract",
        "get-ws-binding-token",
        "import",
        "meta",
        "meta-add",
        "meta-delete",
        "status",
        "validate",
        "versions",
    ]
    assert [d.code for d in registry.system_level()] == ["export", "import", "versions"]
    assert {d.code for d in registry.for_type("Patient")} == {
        "everything",
        "export",
        "meta",
        "meta-add",
        "meta-delete",
        "validate",
    }
    validate = registry.get("validate")
    assert validate is not None
    assert validate.levels() == ["type", "instance"]
    resource = validate.parameter("resource")
    assert resource is not None and resource.is_resource
    assert registry.get("no-such-operation") is None
