"""cmfhir: a FHIR-native care-management data system (FHIR R4B over PostgreSQL)."""

__version__ = "0.1.0"
FHIR_VERSION = "4.3.0"

__all__ = ["FHIR_VERSION", "__version__"]
