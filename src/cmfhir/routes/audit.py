"""Audit at the edge: after each `/fhir` request that reached an interaction, one
`AuditRecord` for the audit trail (interactions/audit.py) — who (the token's user and
client, the address), what (the interaction, the resource or the query), the members whose
data the answer holds, and the outcome. Recording appends to a buffer: no database round
trip is added to the request."""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.auth.principal import OPEN, Principal
from cmfhir.interactions.audit import AuditRecord, AuditTrail
from cmfhir.interactions.request_url import parse_request_url

__all__ = ["AuditMiddleware"]

# The members an answer concerns: the Patients it holds and the ones its resources name.
# (Stored JSON is served as PostgreSQL writes it: a space after each colon and comma.)
_MEMBER = re.compile(
    rb'"reference": ?"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})"'
    rb'|"resourceType": ?"Patient", ?"id": ?"([A-Za-z0-9\-.]{1,64})"'
)
_SCANNED = 4 * 1024 * 1024  # the bytes of an answer looked at for members
_MAX_MEMBERS = 200
_RESOURCE = re.compile(rb'"resourceType": ?"([A-Za-z]{1,64})", ?"id": ?"([A-Za-z0-9\-.]{1,64})"')


def _interaction(method: str, path: str) -> tuple[str, str | None, str | None]:
    if "$" in path:
        return "operation", None, None
    try:
        target = parse_request_url(method, path, "")
    except Exception:  # the router answers it (404/405); nothing was touched
        return "", None, None
    return target.interaction, target.resource_type, target.id


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        trail: AuditTrail | None = getattr(scope["app"].state, "audit", None)
        path = scope["path"].removeprefix("/fhir").strip("/")
        if trail is None or path in ("metadata", ".well-known/smart-configuration"):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and len(body) < _SCANNED:
                body.extend(message.get("body", b"")[: _SCANNED - len(body)])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if status:
                _record(trail, scope, path, status, bytes(body))


def _record(trail: AuditTrail, scope: Scope, path: str, status: int, body: bytes) -> None:
    interaction, resource_type, id = _interaction(scope["method"], path)
    if not interaction or interaction == "capabilities":
        return
    state: dict[str, Any] = scope.get("state", {})
    principal: Principal = state.get("principal", OPEN)
    if status == 401:
        principal = Principal("system", client_id=None, scopes=())
    members: dict[str, None] = {}
    if principal.member:
        members[principal.member] = None
    if resource_type == "Patient" and id:
        members[id] = None
    for found in _MEMBER.finditer(body):
        members[(found[1] or found[2]).decode()] = None
        if len(members) >= _MAX_MEMBERS:
            break
    resources: tuple[str, ...] = ()
    if resource_type and id:
        resources = (f"{resource_type}/{id}",)
    elif status < 300 and interaction in ("create", "update-conditional"):
        first = _RESOURCE.search(body)
        if first:
            resources = (f"{first[1].decode()}/{first[2].decode()}",)
    query = scope.get("query_string", b"").decode("latin-1") or None
    client = scope.get("client")
    trail.record(
        AuditRecord(
            interaction=interaction,
            status=status,
            principal=principal,
            members=tuple(members),
            resources=resources,
            query=f"{path}?{query}" if query else None,
            address=client[0] if client else None,
            request_id=state.get("request_id"),
        )
    )
