"""The FHIR versions cmfhir speaks on the wire (https://hl7.org/fhir/R4/versioning.html#mt-version):
R4 (4.0.1) by default, R4B (4.3.0) when a client asks for it with the `fhirVersion` MIME
parameter. A request's version is one of the keys of `FHIR_VERSIONS` ("4.0" or "4.3")."""

from __future__ import annotations

__all__ = ["DEFAULT_FHIR_VERSION", "FHIR_VERSIONS", "fhir_version_code"]

# The MIME parameter's value (major.minor) -> the full version CapabilityStatement declares.
FHIR_VERSIONS: dict[str, str] = {"4.0": "4.0.1", "4.3": "4.3.0"}
DEFAULT_FHIR_VERSION = "4.0"


def fhir_version_code(text: str) -> str | None:
    """`4.0`, `4.0.1` -> `4.0`; `4.3`, `4.3.0` -> `4.3`; None for a version not served."""
    value = text.strip().strip('"')
    if value in FHIR_VERSIONS:
        return value
    for code, full in FHIR_VERSIONS.items():
        if value == full:
            return code
    return None
