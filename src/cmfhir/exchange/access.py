"""Who may use the exchange endpoints until the access predicate covers them: HL7 v2 intake
takes a backend (`system/`) client or a server running without authorization."""

from __future__ import annotations

from typing import ClassVar

from cmfhir.auth.principal import Principal
from cmfhir.errors import FhirError

__all__ = ["Forbidden", "require_system"]


class Forbidden(FhirError):
    status: ClassVar[int] = 403
    code: ClassVar[str] = "forbidden"


def require_system(principal: Principal, what: str) -> None:
    """Refuse (403) any principal but a system client or an unrestricted one."""
    if principal.unrestricted or principal.kind == "system":
        return
    raise Forbidden(f"{what} needs a backend client authorized with system/ scopes")
