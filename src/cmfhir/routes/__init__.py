"""HTTP only (FastAPI): parse, call an interaction, render."""

from cmfhir.routes.fhir import router
from cmfhir.routes.guard import ErrorGuard
from cmfhir.routes.http import error_response, http_error_response

__all__ = ["ErrorGuard", "error_response", "http_error_response", "router"]
