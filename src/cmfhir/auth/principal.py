"""The principal a request or a worker acts as.

Every store query path takes one and narrows what it reads to what the principal may see
(the access predicate, store/access.py and docs/security.md); a path given no principal
fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from cmfhir.auth.scopes import ResourceScope, parse_scopes

__all__ = ["OPEN", "SENSITIVE_SCOPE", "TRUSTED", "Principal", "PrincipalKind"]

# trusted: the server's own engine and workers; open: every request when CMFHIR_AUTH=off;
# system/user/patient: a SMART token of that scope family.
PrincipalKind = Literal["trusted", "open", "system", "user", "patient"]

# Granted to a backend client that may see resources labelled sensitive without a Consent
# naming it (docs/security.md); user and patient tokens never carry it.
SENSITIVE_SCOPE = "system/cmfhir-sensitive.read"


@lru_cache(maxsize=1024)
def _grants(scopes: tuple[str, ...]) -> tuple[ResourceScope, ...]:
    return parse_scopes(scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    client_id: str | None = None
    # The token's fhirUser ("Practitioner/7", "Patient/12"), if any.
    fhir_user: str | None = None
    # The patient in context (a patient/ scope's compartment), if any.
    patient: str | None = None
    scopes: tuple[str, ...] = field(default=())

    @property
    def unrestricted(self) -> bool:
        """Sees everything: the server itself, or a server running without authorization."""
        return self.kind in ("trusted", "open")

    @property
    def grants(self) -> tuple[ResourceScope, ...]:
        """The resource scopes of the token, parsed (v1 and v2 alike)."""
        return _grants(self.scopes)

    def allows(self, resource_type: str | None, permission: str) -> bool:
        """Whether some scope grants `permission` ("c", "r", "u", "d", "s") on the type
        (None: on any type, as a system-wide search asks)."""
        if self.unrestricted:
            return True
        return any(
            permission in g.permissions
            and (resource_type is None or g.covers(resource_type, permission))
            for g in self.grants
        )

    @property
    def practitioner(self) -> str | None:
        """The Practitioner id of a fhirUser that is one."""
        if self.fhir_user and self.fhir_user.startswith("Practitioner/"):
            return self.fhir_user.split("/", 1)[1]
        return None

    @property
    def member(self) -> str | None:
        """The Patient this principal is or acts for: the patient in context, or a fhirUser
        that is a Patient."""
        if self.patient:
            return self.patient
        if self.fhir_user and self.fhir_user.startswith("Patient/"):
            return self.fhir_user.split("/", 1)[1]
        return None

    @property
    def sees_sensitive(self) -> bool:
        return self.kind == "system" and SENSITIVE_SCOPE in self.scopes


TRUSTED = Principal("trusted")
OPEN = Principal("open")
