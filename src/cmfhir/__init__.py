"""cmfhir: a FHIR-native care-management data system (FHIR R4 by default, R4B on request,
over PostgreSQL)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
