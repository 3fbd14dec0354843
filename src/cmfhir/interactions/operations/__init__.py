"""FHIR operations (`$code`), one module per operation, routed by `invoke` from the
OperationDefinitions in `profiles/operations/`."""

from cmfhir.interactions.operations.call import OperationCall
from cmfhir.interactions.operations.invoke import RESULT_PARAMETERS, invoke
from cmfhir.interactions.operations.registry import IMPLEMENTATIONS, Implementation

__all__ = ["IMPLEMENTATIONS", "RESULT_PARAMETERS", "Implementation", "OperationCall", "invoke"]
