"""Audit at the edge: each `/fhir` request that reached an interaction is audited
(interactions/audit.py) — who (the token's user and client, the address), what (the
interaction, the resource or the query), the members whose data it touched, the outcome.

A request that may write (POST, PUT, PATCH, DELETE) carries an `AuditRequest` in its state;
`routes.fhir` hands it to the interactions, whose write transactions record the AuditEvents
of what they write before they commit. Every other request — reads, searches, history, and
refused or failed writes, which changed nothing — appends an `AuditRecord` to the trail's
buffer once answered: no database round trip is added to the request. A transaction,
batch or operation gets both: the events of its writes, in their transactions, and one for
the request as a whole (its reads, and the entries of a batch that failed).

The authorization server's endpoints are audited too, accepted or refused: the authorize
request that starts a standalone or EHR launch (`GET /auth/authorize`), each submission of
the login form (`POST /auth/authorize`), each token request (`/auth/token`), introspection
(`/auth/introspect`), revocation (`/auth/revoke`) and the EHR's launch contexts
(`/auth/launch`), with the client, the account name given, the caller, and the user and
patient concerned (never a password, code or token).

A write may carry a `Provenance` in the `X-Provenance` header
(https://hl7.org/fhir/R4/provenance.html#header): it is validated before the write (400
and nothing written if it is not a valid Provenance) and stored in the write's transaction
with the written version as its `target`."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.auth.principal import OPEN, Principal, PrincipalKind
from cmfhir.errors import BadRequest, FhirError
from cmfhir.interactions.audit import (
    SINGLE_WRITES,
    SUBTYPES,
    AuditRecord,
    AuditRequest,
    AuditSubject,
    AuditTrail,
)
from cmfhir.interactions.request_url import parse_request_url
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.routes.http import error_response

__all__ = ["AuditMiddleware"]

# The members an answer concerns: the Patients it holds and the ones its resources name.
# (Stored JSON is served as PostgreSQL writes it: a space after each colon and comma.)
_MEMBER = re.compile(
    rb'"reference": ?"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})"'
    rb'|"resourceType": ?"Patient", ?"id": ?"([A-Za-z0-9\-.]{1,64})"'
)
_SCANNED = 4 * 1024 * 1024  # the bytes of an answer looked at for members
_MAX_MEMBERS = 200
# The authorization server's endpoints and the event each records (docs/security.md, Audit).
_AUTH = {
    ("GET", "/auth/authorize"): "authorize",
    ("POST", "/auth/authorize"): "login",
    ("POST", "/auth/token"): "token",
    ("POST", "/auth/introspect"): "introspect",
    ("POST", "/auth/revoke"): "revoke",
    ("POST", "/auth/launch"): "launch",
}
_FORM_BYTES = 64 * 1024
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
        kind = _AUTH.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if kind is not None:
            logins: AuditTrail | None = getattr(scope["app"].state, "audit", None)
            if logins is not None:
                await _authorization(self.app, logins, kind, scope, receive, send)
                return
        if scope["type"] != "http" or not scope["path"].startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        trail: AuditTrail | None = getattr(scope["app"].state, "audit", None)
        path = scope["path"].removeprefix("/fhir").strip("/")
        if trail is None or path in ("metadata", ".well-known/smart-configuration"):
            await self.app(scope, receive, send)
            return
        writes = scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
        if writes:
            try:
                provenance = _provenance(scope) if scope["method"] != "DELETE" else None
            except FhirError as error:
                await error_response(error)(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            interaction, _, _ = _interaction(scope["method"], path)
            client = scope.get("client")
            state["audit"] = AuditRequest(
                interaction=interaction or "operation",
                query=_query(path, scope),
                address=client[0] if client else None,
                request_id=state.get("request_id"),
                provenance=provenance,
            )
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


async def _authorization(
    app: ASGIApp, trail: AuditTrail, kind: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """A request to the authorization server, accepted or refused."""
    form = bytearray()
    status = 0
    answer = bytearray()

    async def read() -> Message:
        message = await receive()
        if message["type"] == "http.request" and len(form) < _FORM_BYTES:
            form.extend(message.get("body", b"")[: _FORM_BYTES - len(form)])
        return message

    async def capture(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and len(answer) < _FORM_BYTES:
            answer.extend(message.get("body", b"")[: _FORM_BYTES - len(answer)])
        await send(message)

    try:
        await app(scope, read, capture)
    finally:
        if status:
            trail.record(_authorization_record(kind, scope, status, bytes(form), bytes(answer)))


def _claims(token: Any) -> dict[str, Any]:
    """The claims of a JWT, read without checking its signature: the server has just
    issued it (or refused it), and they only say who the event is about."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value[:256] if isinstance(value, str) and value else None


def _patient_of(fhir_user: str | None) -> str | None:
    if fhir_user and fhir_user.rsplit("/", 2)[-2:-1] == ["Patient"]:
        return fhir_user.rsplit("/", 1)[-1]
    return None


def _authorization_record(
    kind: str, scope: Scope, status: int, form_bytes: bytes, answer: bytes
) -> AuditRecord:
    """Who asked the authorization server for what: the client, the account name given,
    the caller's token, and the user and patient the login, launch or token concerns.
    Never a password, code or token."""
    body = form_bytes.decode("utf-8", errors="replace")
    form = dict(parse_qsl(body)) if kind != "launch" else {}
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    state: dict[str, Any] = scope.get("state", {})
    subject: AuditSubject = state.get("audit_subject") or AuditSubject()
    caller: Principal | None = state.get("principal")
    client_id = _text(query.get("client_id") or form.get("client_id"))
    if client_id is None:  # a backend client names itself in its assertion
        client_id = _text(_claims(form.get("client_assertion")).get("iss"))
    fhir_user, patient = _text(subject.fhir_user), _text(subject.patient)
    subtypes: tuple[tuple[str, str], ...] = ()
    resources: tuple[str, ...] = ()
    if kind in ("authorize", "login"):
        launch = "ehr-launch" if query.get("launch") else "standalone-launch"
        subtypes = ((SUBTYPES, launch),)
    if kind == "token" and status == 200:
        try:
            granted = _claims(json.loads(answer).get("access_token"))
        except (ValueError, AttributeError):
            granted = {}
        fhir_user, patient = _text(granted.get("fhirUser")), _text(granted.get("patient"))
        client_id = _text(granted.get("client_id")) or client_id
    if kind == "launch":
        try:
            asked = json.loads(body)
        except ValueError:
            asked = None
        patient = _text(asked.get("patient")) if isinstance(asked, dict) else None
    principal: Principal
    if kind in ("introspect", "launch"):
        # Asked with a token of the caller's own: the caller is the agent, and the token
        # introspected (its user) or the launch's patient is what the event is about.
        principal = caller or Principal("system", client_id=None, scopes=())
        if kind == "introspect" and subject.fhir_user and not _patient_of(fhir_user):
            resources = (subject.fhir_user,)
            fhir_user = None
    else:
        if kind == "revoke":
            client_id = _text(subject.client_id) or client_id
        who: PrincipalKind = "system" if form.get("grant_type") == "client_credentials" else "user"
        principal = Principal(who, client_id=client_id, fhir_user=fhir_user)
    members: dict[str, None] = {}
    for member in (
        principal.member,
        patient,
        _patient_of(fhir_user),
    ):
        if member:
            members[member] = None
    client = scope.get("client")
    return AuditRecord(
        interaction=kind,
        status=status,
        principal=principal,
        members=tuple(members),
        resources=resources,
        address=client[0] if client else None,
        request_id=state.get("request_id"),
        alt_id=_text(form.get("username")) if kind == "login" else None,
        subtypes=subtypes,
    )


def _query(path: str, scope: Scope) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else None


def _provenance(scope: Scope) -> dict[str, Any] | None:
    """The X-Provenance header's Provenance (its target is the write's), or None."""
    header = next((v for k, v in scope.get("headers", ()) if k.lower() == b"x-provenance"), None)
    if header is None:
        return None
    try:
        value = parse_json(header)
    except FhirError as error:
        raise BadRequest(
            f"X-Provenance is not JSON: {error.diagnostics}", expression=["X-Provenance"]
        ) from error
    if not isinstance(value, dict) or value.get("resourceType") != "Provenance":
        raise BadRequest("X-Provenance must hold a Provenance", expression=["X-Provenance"])
    checked = dict(value)
    # The server sets the target: a placeholder stands in for it while validating.
    checked["target"] = [{"reference": "Patient/x"}]
    checked.setdefault("recorded", "2000-01-01T00:00:00Z")
    validate_for_version(checked, "4.0", expected_type="Provenance")
    return {k: v for k, v in value.items() if k not in ("id", "meta", "target")}


def _record(trail: AuditTrail, scope: Scope, path: str, status: int, body: bytes) -> None:
    state: dict[str, Any] = scope.get("state", {})
    read = state.get("read_path")  # a read or vread answered by routes/read_path.py
    searched = state.get("search_path")  # a search answered there
    if read is not None:
        resource_type, id, version = read.groups()
        interaction = "vread" if version else "read"
    elif searched is not None:
        interaction, resource_type, id = "search-type", searched[1], None
    else:
        interaction, resource_type, id = _interaction(scope["method"], path)
    if not interaction or interaction == "capabilities":
        return
    request: AuditRequest | None = state.get("audit")
    if request is not None and request.written and status < 400 and interaction in SINGLE_WRITES:
        return  # its AuditEvent committed with the write
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
    client = scope.get("client")
    trail.record(
        AuditRecord(
            interaction=interaction,
            status=status,
            principal=principal,
            members=tuple(members),
            resources=resources,
            query=_query(path, scope),
            address=client[0] if client else None,
            request_id=state.get("request_id"),
        )
    )
