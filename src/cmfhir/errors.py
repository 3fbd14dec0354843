"""One exception hierarchy for cmfhir; every error knows its HTTP status and renders as an
OperationOutcome (https://hl7.org/fhir/R4B/operationoutcome.html).

FhirError
 ├── BadRequest             400  invalid      malformed JSON, bad parameters, bad bundle
 │    └── InvalidResource   400  invalid      a resource that fails validation
 ├── Unauthorized           401  login        no, invalid or expired bearer token
 ├── Forbidden              403  forbidden    the token's scopes do not cover the request
 ├── NotFound               404  not-found    unknown type, id or version
 ├── MethodNotAllowed       405  not-supported
 ├── NotAcceptable          406  not-supported  a format or FHIR version not served
 ├── Conflict               409  conflict     a concurrent change won; retry
 ├── Gone                   410  deleted      the resource was deleted
 ├── PreconditionFailed     412  conflict     If-Match mismatch, ambiguous conditional match
 ├── PayloadTooLarge        413  too-costly
 ├── UnsupportedMediaType   415  not-supported
 ├── Unprocessable          422  processing   valid FHIR that breaks a business rule
 └── ServiceUnavailable     503  transient    the database cannot be reached
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "InvalidResource",
    "Issue",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceUnavailable",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "operation_outcome",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and where (a FHIRPath-like location)."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


class FhirError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "exception"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: Iterable[str] = (),
        issues: Iterable[Issue] = (),
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        listed = list(issues)
        self.issues: list[Issue] = listed or [
            Issue(diagnostics, code=code or self.code, expression=tuple(expression))
        ]
        self.headers = headers or {}

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    """A resource failed validation; `issues` lists every problem with its location."""


class Unauthorized(FhirError):
    """No usable bearer token; rendered with `WWW-Authenticate: Bearer`."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    status = 422
    code = "processing"


class ServiceUnavailable(FhirError):
    status = 503
    code = "transient"
