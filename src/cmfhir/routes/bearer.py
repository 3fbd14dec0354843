"""The resource server at the edge: every `/fhir` request but the public ones carries a
valid bearer token (401 with `WWW-Authenticate: Bearer` otherwise), whose scopes cover the
interaction asked for (403 otherwise); the request's context then acts as the token's
principal, which narrows every store query (store/access.py)."""

from __future__ import annotations

from dataclasses import replace

from fastapi import Request

from cmfhir.auth.principal import OPEN, Principal
from cmfhir.auth.tokens import InvalidToken
from cmfhir.errors import FhirError, Forbidden, Unauthorized
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.oauth import ResourceServer
from cmfhir.interactions.request_url import parse_request_url
from cmfhir.routes.http import base_url

__all__ = ["PUBLIC_PATHS", "authorize_request", "required_permission"]

PUBLIC_PATHS = frozenset({"metadata", ".well-known/smart-configuration"})

# The SMART permission letter each interaction needs (request_url's interaction names).
_LETTER = {
    "search-system": "s",
    "history-system": "s",
    "search-type": "s",
    "history-type": "s",
    "search-compartment": "s",
    "create": "c",
    "update": "u",
    "update-conditional": "u",
    "patch": "u",
    "delete": "d",
    "delete-conditional": "d",
    "read": "r",
    "vread": "r",
    "history-instance": "r",
}


def _challenge(error: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="cmfhir"'
    if error:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


def required_permission(method: str, path: str) -> tuple[str | None, str] | None:
    """(resource type or None, permission letter) the request needs, or None for one any
    token may make (transaction and batch Bundles, whose entries are each narrowed and
    checked in the store; operations, narrowed the same way)."""
    if "$" in path:
        return None
    try:
        target = parse_request_url(method, path, "")
    except FhirError:
        return None  # the route answers 404 or 405 itself
    letter = _LETTER.get(target.interaction)
    if letter is None:
        return None
    return target.resource_type, letter


async def authorize_request(request: Request, context: FhirContext) -> FhirContext:
    """The request's context acting as its token's principal (OPEN with CMFHIR_AUTH=off)."""
    settings = request.app.state.settings
    if settings.auth == "off":
        return context if context.principal is OPEN else replace(context, principal=OPEN)
    path = request.url.path.removeprefix("/fhir").strip("/")
    if path in PUBLIC_PATHS:
        return replace(context, principal=Principal("system", scopes=()))
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A bearer access token is required", headers=_challenge())
    resource: ResourceServer = request.app.state.resource_server
    fhir_base = base_url(request)
    try:
        principal = await resource.principal(
            token.strip(), fhir_base, fhir_base.rsplit("/fhir", 1)[0]
        )
    except InvalidToken as error:
        raise Unauthorized(
            "The access token is invalid, expired, revoked or not for this server",
            headers=_challenge("invalid_token"),
        ) from error
    request.state.principal = principal
    # Outside /fhir (the /reports endpoint) the path names no FHIR interaction: what the
    # token may do there is the endpoint's to check (reports/run.py).
    fhir = request.url.path == "/fhir" or request.url.path.startswith("/fhir/")
    needed = required_permission(request.method, path) if fhir else None
    if needed is not None and not principal.allows(*needed):
        resource_type, letter = needed
        raise Forbidden(
            f"The token's scopes do not permit '{letter}' on {resource_type or 'the server'}",
            headers=_challenge("insufficient_scope"),
        )
    if needed is None and not principal.grants:
        raise Forbidden("The token grants no access to resources")
    return replace(context, principal=principal)
