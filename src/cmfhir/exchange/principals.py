"""The principal a bulk job (export, import) was asked for by, as stored with the job: the
worker runs the job as that principal, and only that principal may poll it or fetch its
files (https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-status-request)."""

from __future__ import annotations

from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.exchange.access import Forbidden

__all__ = ["principal_from_json", "principal_json", "require_owner"]

_KINDS = ("trusted", "open", "system", "user", "patient")


def principal_json(principal: Principal) -> dict[str, Any]:
    return {
        "kind": principal.kind,
        "client_id": principal.client_id,
        "fhir_user": principal.fhir_user,
        "patient": principal.patient,
        "scopes": list(principal.scopes),
    }


def principal_from_json(data: dict[str, Any]) -> Principal:
    kind = data.get("kind")
    if kind not in _KINDS or kind == "trusted":
        # Never widen a job's rights: an unreadable principal reads nothing a backend
        # client without scopes could not.
        return Principal("system", client_id=data.get("client_id"))
    return Principal(
        kind,
        client_id=data.get("client_id"),
        fhir_user=data.get("fhir_user"),
        patient=data.get("patient"),
        scopes=tuple(data.get("scopes", ())),
    )


def require_owner(principal: Principal, owner: dict[str, Any], what: str) -> None:
    """The status and files of a bulk job are for the principal that asked for it: the same
    client, and for a user or patient token the same user or patient too (two users of one
    app do not share their exports)."""
    if principal.unrestricted:
        return
    asked = principal_json(principal)
    if any(owner.get(key) != asked[key] for key in ("kind", "client_id", "fhir_user", "patient")):
        raise Forbidden(f"This {what} was asked for by another client or user")
