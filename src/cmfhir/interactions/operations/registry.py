"""The implementation of each operation, by its OperationDefinition's code. An operation is
served when both its definition (`profiles/operations/`) and its implementation are here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations import expand, extract, meta, validate, versions
from cmfhir.interactions.operations.call import OperationCall

__all__ = ["IMPLEMENTATIONS", "Implementation"]

Implementation = Callable[[FhirContext, OperationCall], Awaitable[Result]]

IMPLEMENTATIONS: dict[str, Implementation] = {
    "validate": validate.run,
    "versions": versions.run,
    "meta": meta.meta,
    "meta-add": meta.meta_add,
    "meta-delete": meta.meta_delete,
    "expand": expand.run,
    "extract": extract.run,
}
