"""The resource server at the edge: every `/fhir` request but the public ones carries a
valid bearer token (401 with `WWW-Authenticate: Bearer` otherwise), whose scopes cover the
interaction asked for (403 otherwise); the request's context then acts as the token's
principal, which narrows every store query (store/access.py)."""

from __future__ import annotations

import weakref
from dataclasses import replace

from fastapi import Request

from cmfhir.auth.principal import OPEN, Principal
from cmfhir.auth.tokens import InvalidToken, VerifiedTokens
from cmfhir.auth.tokens import principal as principal_of
from cmfhir.errors import FhirError, Forbidden, Unauthorized
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.oauth import ResourceServer
from cmfhir.interactions.request_url import parse_request_url
from cmfhir.routes.http import base_url

__all__ = ["PUBLIC_PATHS", "authorize_request", "required_permission", "verified_tokens"]

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


# The tokens each resource server has verified (one per application).
_VERIFIED: weakref.WeakKeyDictionary[ResourceServer, VerifiedTokens] = weakref.WeakKeyDictionary()


def verified_tokens(resource: ResourceServer) -> VerifiedTokens:
    cache = _VERIFIED.get(resource)
    if cache is None:
        cache = _VERIFIED[resource] = VerifiedTokens()
    return cache


def _invalid() -> Unauthorized:
    return Unauthorized(
        "The access token is invalid, expired, revoked or not for this server",
        headers=_challenge("invalid_token"),
    )


async def _principal(resource: ResourceServer, token: str, fhir_base: str) -> Principal:
    """The token's principal: verified once, then taken from `verified_tokens` until it
    expires; whether it was revoked is asked every time."""
    origin = fhir_base.rsplit("/fhir", 1)[0]
    cache = verified_tokens(resource)
    known = cache.get(token, fhir_base, origin)
    if known is not None:
        if await resource.is_revoked(known.jti):
            raise _invalid()
        return known.principal
    try:
        claims = await resource.claims(token, fhir_base, origin)
    except InvalidToken as error:
        raise _invalid() from error
    return cache.put(token, fhir_base, origin, claims, principal_of(claims)).principal


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
    principal = await _principal(resource, token.strip(), base_url(request))
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
