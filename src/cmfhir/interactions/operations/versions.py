"""$versions at system level (https://hl7.org/fhir/R4/http.html#versions): the FHIR versions
the server speaks, as the `fhirVersion` MIME parameter names them, and its default."""

from __future__ import annotations

from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.resources.fhir_versions import DEFAULT_VERSION, VERSIONS

__all__ = ["run"]


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    versions = list(VERSIONS)
    if call.plain_json:
        body = {"versions": versions, "default": DEFAULT_VERSION}
        return Result(200, body, media_type="application/json")
    parameters = [{"name": "version", "valueCode": v} for v in versions]
    parameters.append({"name": "default", "valueCode": DEFAULT_VERSION})
    return Result(200, {"resourceType": "Parameters", "parameter": parameters})
