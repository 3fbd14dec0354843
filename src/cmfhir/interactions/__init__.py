"""One module per FHIR interaction; each opens its own transaction and knows no HTTP."""

from cmfhir.interactions.capabilities import capabilities, capability_statement
from cmfhir.interactions.context import FhirContext, Limits, Result
from cmfhir.interactions.create import create
from cmfhir.interactions.delete import delete, delete_conditional
from cmfhir.interactions.history import history
from cmfhir.interactions.patch import patch
from cmfhir.interactions.read import read, vread
from cmfhir.interactions.search_type import search, search_compartment
from cmfhir.interactions.transaction import process_bundle
from cmfhir.interactions.update import update, update_conditional

__all__ = [
    "FhirContext",
    "Limits",
    "Result",
    "capabilities",
    "capability_statement",
    "create",
    "delete",
    "delete_conditional",
    "history",
    "patch",
    "process_bundle",
    "read",
    "search",
    "search_compartment",
    "update",
    "update_conditional",
    "vread",
]
