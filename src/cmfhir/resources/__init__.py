"""FHIR R4B knowledge: resource types, JSON parsing and serialization, validation,
search-parameter definitions, index values and the patient compartment."""

from cmfhir.resources.compartment import (
    PatientCompartment,
    load_patient_compartment,
    patient_compartment,
)
from cmfhir.resources.fhirjson import RawJson, dump_json, parse_json
from cmfhir.resources.fhirpath import compile_path
from cmfhir.resources.index_values import (
    DATE_MAX,
    DATE_MIN,
    DateEntry,
    IdentifierTypeEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    ReferenceIdentifierEntry,
    ResourceIndex,
    StringEntry,
    TokenEntry,
    UriEntry,
    add_references,
    composite_parameters,
    date_range,
    extract_index,
    normalize_string,
    number_range,
    parse_reference,
)
from cmfhir.resources.search_parameters import (
    CompiledParameter,
    SearchParameter,
    SearchParameterRegistry,
    load_registry,
)
from cmfhir.resources.types import RESOURCE_TYPES, is_resource_type
from cmfhir.resources.validation import (
    ResourceValidator,
    load_required_bindings,
    validate_resource,
)

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "RESOURCE_TYPES",
    "CompiledParameter",
    "DateEntry",
    "IdentifierTypeEntry",
    "NumberEntry",
    "PatientCompartment",
    "QuantityEntry",
    "RawJson",
    "ReferenceEntry",
    "ReferenceIdentifierEntry",
    "ResourceIndex",
    "ResourceValidator",
    "SearchParameter",
    "SearchParameterRegistry",
    "StringEntry",
    "TokenEntry",
    "UriEntry",
    "add_references",
    "compile_path",
    "composite_parameters",
    "date_range",
    "dump_json",
    "extract_index",
    "is_resource_type",
    "load_patient_compartment",
    "load_registry",
    "load_required_bindings",
    "normalize_string",
    "number_range",
    "parse_json",
    "parse_reference",
    "patient_compartment",
    "validate_resource",
]
