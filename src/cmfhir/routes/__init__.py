"""HTTP only (FastAPI): parse, call an interaction, render."""

from cmfhir.routes.fhir import router
from cmfhir.routes.guard import ErrorGuard
from cmfhir.routes.http import error_response, http_error_response
from cmfhir.routes.wire import Wire

__all__ = [
    "ErrorGuard",
    "Wire",
    "error_response",
    "http_error_response",
    "router",
]
