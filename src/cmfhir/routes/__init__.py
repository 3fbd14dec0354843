"""HTTP only (FastAPI): parse, call an interaction, render."""

from cmfhir.routes.edge import Edge
from cmfhir.routes.fhir import DirectRoutes, router
from cmfhir.routes.http import error_response, http_error_response

__all__ = [
    "DirectRoutes",
    "Edge",
    "error_response",
    "http_error_response",
    "router",
]
