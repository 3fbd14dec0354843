"""SMART on FHIR endpoints: discovery (`/fhir/.well-known/smart-configuration`), the
built-in authorization server under `/auth` (authorize form, token, introspection,
revocation, JWKS) and the EHR launch-context API (`POST /auth/launch`)."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, Forbidden, NotFound
from cmfhir.interactions.audit import AuditSubject
from cmfhir.interactions.oauth import (
    AuthorizationServer,
    OAuthError,
    ResourceServer,
    smart_configuration,
)
from cmfhir.routes.bearer import authorize_request
from cmfhir.routes.http import base_url

__all__ = ["security_extension", "smart_router", "with_security"]

smart_router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM_LIMIT = 64 * 1024


def _origin(request: Request) -> str:
    return base_url(request).rsplit("/fhir", 1)[0]


def _issuer(request: Request) -> str:
    resource: ResourceServer = request.app.state.resource_server
    return resource.issuer(_origin(request))


def _server(request: Request) -> AuthorizationServer:
    server: AuthorizationServer | None = getattr(request.app.state, "authorization", None)
    if server is None or request.app.state.settings.auth != "smart":
        raise NotFound("The built-in authorization server is not running")
    return server


def _oauth_error(error: OAuthError) -> JSONResponse:
    return JSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers=_NO_STORE,
    )


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > _FORM_LIMIT:
        raise OAuthError("invalid_request", "The form is too large")
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def security_extension(issuer: str) -> dict[str, Any]:
    """CapabilityStatement.rest.security for SMART (the OAuth URIs extension)."""
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "token", "valueUri": f"{issuer}/token"},
                    {"url": "authorize", "valueUri": f"{issuer}/authorize"},
                    {"url": "introspect", "valueUri": f"{issuer}/introspect"},
                    {"url": "revoke", "valueUri": f"{issuer}/revoke"},
                ],
            }
        ],
    }


def with_security(statement: dict[str, Any], request: Request) -> dict[str, Any]:
    """The CapabilityStatement with rest.security (a copy: the statement is cached)."""
    rest = [{**statement["rest"][0], "security": security_extension(_issuer(request))}]
    return {**statement, "rest": rest + list(statement["rest"][1:])}


@smart_router.get("/fhir/.well-known/smart-configuration")
async def discovery(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(_issuer(request), base_url(request)))


@smart_router.get("/auth/jwks")
async def jwks(request: Request) -> JSONResponse:
    server = _server(request)
    server.keys.reload()
    return JSONResponse(server.keys.public_jwks())


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - cmfhir</title></head>
<body><main>
<h1>{html.escape(title)}</h1>
{body}
</main></body></html>"""
    return HTMLResponse(
        document,
        status_code=status,
        headers={
            **_NO_STORE,
            "Content-Security-Policy": "default-src 'none'; form-action 'self'",
            "X-Frame-Options": "DENY",
        },
    )


def _login_form(request: Request, client_id: str, scope: str, message: str | None) -> str:
    action = html.escape(request.url.path + "?" + request.url.query, quote=True)
    alert = f'<p role="alert">{html.escape(message)}</p>' if message else ""
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in scope.split())
    return f"""{alert}
<p>The application <strong>{html.escape(client_id)}</strong> asks for access to:</p>
<ul>{scopes}</ul>
<form method="post" action="{action}">
<p><label for="username">Username</label><br>
<input id="username" name="username" autocomplete="username" required></p>
<p><label for="password">Password</label><br>
<input id="password" name="password" type="password" autocomplete="current-password"
 required></p>
<p><button type="submit">Sign in and allow</button></p>
</form>"""


def _refused(error: OAuthError) -> HTMLResponse:
    # Never redirected: the redirect URI may not be the client's (RFC 6749 4.1.2.1).
    return _page(
        "Authorization refused", f'<p role="alert">{html.escape(error.description)}</p>', 400
    )


@smart_router.get("/auth/authorize")
async def authorize_page(request: Request) -> Response:
    server = _server(request)
    params = dict(request.query_params)
    try:
        checked = await server.check_authorize(params, base_url(request))
    except OAuthError as error:
        return _page(
            "Authorization refused", f"<p role=alert>{html.escape(error.description)}</p>", 400
        )
    # The launch's patient (an EHR launch), for the audit trail (routes/audit.py).
    request.state.audit_subject = AuditSubject(patient=checked.patient)
    return _page("Sign in", _login_form(request, checked.client_id, checked.scope, None))


@smart_router.post("/auth/authorize")
async def authorize_submit(request: Request) -> Response:
    server = _server(request)
    params = dict(request.query_params)
    try:
        checked = await server.check_authorize(params, base_url(request))
    except OAuthError as error:
        return _page(
            "Authorization refused", f"<p role=alert>{html.escape(error.description)}</p>", 400
        )
    try:
        form = await _form(request)
        address = request.client.host if request.client else "unknown"
        signed = await server.login(
            checked,
            form.get("username", ""),
            form.get("password", ""),
            address,
            may_open=lambda fhir_user, patient: _may_open(request, fhir_user, patient),
        )
    except OAuthError as error:
        page = _login_form(request, checked.client_id, checked.scope, error.description)
        return _page("Sign in", page, error.status)
    request.state.audit_subject = AuditSubject(signed.fhir_user, signed.patient)
    return RedirectResponse(signed.redirect, status_code=303, headers=_NO_STORE)


@smart_router.post("/auth/token")
async def token(request: Request) -> JSONResponse:
    server = _server(request)
    try:
        form = await _form(request)
        answer = await server.token(form, _issuer(request), base_url(request))
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(answer, headers=_NO_STORE)


async def _caller(request: Request) -> None:
    """Introspection and launch creation need a bearer token of their own (a client of
    this server), so that tokens cannot be probed anonymously."""
    await authorize_request(request, request.app.state.fhir)


@smart_router.post("/auth/introspect")
async def introspect(request: Request) -> JSONResponse:
    server = _server(request)
    await _caller(request)
    try:
        form = await _form(request)
    except OAuthError as error:
        return _oauth_error(error)
    answer = await server.introspect(
        form.get("token", ""), request.app.state.resource_server, base_url(request)
    )
    if answer.get("active"):
        # Whose token it is, for the audit trail (routes/audit.py): never the token itself.
        request.state.audit_subject = AuditSubject(
            _text(answer.get("fhirUser")),
            _text(answer.get("patient")),
            _text(answer.get("client_id")),
        )
    return JSONResponse(answer, headers=_NO_STORE)


@smart_router.post("/auth/revoke")
async def revoke(request: Request) -> Response:
    server = _server(request)
    try:
        form = await _form(request)
        revoked = await server.revoke(
            form.get("token", ""), request.app.state.resource_server, base_url(request)
        )
    except OAuthError as error:
        return _oauth_error(error)
    if revoked is not None:
        request.state.audit_subject = AuditSubject(
            revoked.fhir_user, revoked.patient, revoked.client_id
        )
    return Response(status_code=200, headers=_NO_STORE)


async def _may_open(request: Request, fhir_user: str, patient: str) -> bool:
    """Whether the user may read the member's record under the access predicate (their care
    teams, the organizations they supervise): an EHR launch's patient needs it."""
    ctx = request.app.state.fhir
    who = Principal("user", fhir_user=fhir_user, scopes=("user/Patient.rs",))
    return await ctx.store.read(who, "Patient", patient) is not None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@smart_router.post("/auth/launch")
async def create_launch(request: Request) -> JSONResponse:
    """An EHR launch context: `{"patient": "ID"}` in, `{"launch": "..."}` out; the EHR
    passes it to the app, which sends it as the authorize request's `launch`."""
    server = _server(request)
    await _caller(request)
    principal = getattr(request.state, "principal", None)
    if principal is None or principal.kind == "patient":
        raise Forbidden("Only a user or system token may create a launch context")
    try:
        body = await request.json()
    except ValueError as error:
        raise BadRequest('The body must be JSON: {"patient": "ID"}') from error
    patient = body.get("patient") if isinstance(body, dict) else None
    # The caller names a member it may see (its own access predicate), and says nothing of
    # the others, not even whether they exist.
    if (
        patient
        and await request.app.state.fhir.store.read(principal, "Patient", str(patient)) is None
    ):
        raise NotFound(f"Patient/{patient} is not known")
    launch = await server.create_launch(str(patient) if patient else None)
    query = urlencode({"launch": launch, "iss": base_url(request)})
    return JSONResponse({"launch": launch, "launch_url_query": query}, headers=_NO_STORE)
