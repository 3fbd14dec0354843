"""The principal a request or a worker acts as.

Every store query path takes one and narrows what it reads to what the principal may see
(the access predicate, docs/security.md); a path given no principal fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["OPEN", "TRUSTED", "Principal", "PrincipalKind"]

# trusted: the server's own engine and workers; open: every request when CMFHIR_AUTH=off;
# system/user/patient: a SMART token of that scope family.
PrincipalKind = Literal["trusted", "open", "system", "user", "patient"]


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


TRUSTED = Principal("trusted")
OPEN = Principal("open")
