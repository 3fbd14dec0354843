"""FHIR R4B knowledge: resource types, JSON parsing and serialization, validation."""

from cmfhir.resources.fhirjson import RawJson, dump_json, parse_json
from cmfhir.resources.types import RESOURCE_TYPES, is_resource_type
from cmfhir.resources.validation import (
    ResourceValidator,
    load_required_bindings,
    validate_resource,
)

__all__ = [
    "RESOURCE_TYPES",
    "RawJson",
    "ResourceValidator",
    "dump_json",
    "is_resource_type",
    "load_required_bindings",
    "parse_json",
    "validate_resource",
]
