"""The built-in SMART authorization server and the resource server's token check
(https://hl7.org/fhir/smart-app-launch/app-launch.html, backend-services.html; RFC 6749,
7636, 7662, 7009).

Flows: authorization code with PKCE (S256) for standalone and EHR launch, SMART Backend
Services (`client_credentials` with a `private_key_jwt` assertion), refresh tokens for
`offline_access`/`online_access`, an id_token with `fhirUser` for `openid fhirUser`,
introspection and revocation. Signing and verification are joserfc's, password hashing
argon2's, PKCE's S256 authlib's; this module only decides who gets what.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc.jwk import KeySet

from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.passwords import verify_password
from cmfhir.auth.principal import Principal
from cmfhir.auth.scopes import parse_scope
from cmfhir.auth.tokens import (
    InvalidToken,
    issue_access_token,
    issue_id_token,
    principal,
    verify_access_token,
    verify_client_assertion,
)
from cmfhir.store import OAuthStore
from cmfhir.store.oauth import Grant

__all__ = [
    "AuthorizationServer",
    "AuthorizeRequest",
    "OAuthError",
    "ResourceServer",
    "Revoked",
    "SignedIn",
    "smart_configuration",
]

log = logging.getLogger(__name__)

CODE_LIFETIME = 60
LAUNCH_LIFETIME = 3600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CAPABILITIES = [
    "launch-standalone",
    "launch-ehr",
    "client-public",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "context-ehr-patient",
    "sso-openid-connect",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "permission-offline",
]
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
]


class OAuthError(Exception):
    """An OAuth error response: `error` code, description and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(seconds_from_now: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds_from_now)


def smart_configuration(issuer: str, fhir_base: str) -> dict[str, Any]:
    """The SMART discovery document (`.well-known/smart-configuration`)."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": CAPABILITIES,
        "fhir_base": fhir_base,
    }


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """An authorize request that passed every check that does not need the user."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str
    patient: str | None  # from the EHR launch context
    nonce: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A login accepted: where the browser goes next (the client's redirect URI with the
    code), the user and the patient in context (what the audit trail records)."""

    redirect: str
    fhir_user: str
    patient: str | None


@dataclass(frozen=True, slots=True)
class Revoked:
    """What a revocation revoked: the kind of token, its client, user and patient."""

    token_type: str
    client_id: str | None
    fhir_user: str | None
    patient: str | None


@dataclass(slots=True)
class AuthorizationServer:
    store: OAuthStore
    keys: SigningKeys
    access_lifetime: int = 3600
    refresh_lifetime: int = 30 * 24 * 3600
    login_attempts: int = 5
    login_window: int = 900
    # Serializes failed-login bookkeeping per process (the counts live in the database).
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # -- authorize ------------------------------------------------------------------------

    async def check_authorize(self, params: Mapping[str, str], fhir_base: str) -> AuthorizeRequest:
        """Validate an authorize request. Errors before the redirect URI is known to be the
        client's are shown to the user (never redirected)."""
        client_id = params.get("client_id", "")
        client = await self.store.client(client_id) if client_id else None
        if client is None:
            raise OAuthError("invalid_client", "Unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not registered for the client")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be 'code'")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise OAuthError("invalid_request", "PKCE with code_challenge_method=S256 is required")
        state = params.get("state", "")
        if not state:
            raise OAuthError("invalid_request", "state is required")
        aud = params.get("aud")
        if aud is not None and aud.rstrip("/") != fhir_base.rstrip("/"):
            raise OAuthError("invalid_request", "aud is not this FHIR server")
        scope = _granted(params.get("scope", ""), client.scope)
        patient: str | None = None
        launch = params.get("launch")
        if launch:
            found = await self.store.launch(launch)
            if found is False:
                raise OAuthError("invalid_request", "Unknown or expired launch")
            patient = found if isinstance(found, str) else None
        return AuthorizeRequest(
            client_id,
            redirect_uri,
            scope,
            state,
            params["code_challenge"],
            patient,
            params.get("nonce"),
        )

    async def login(
        self,
        request: AuthorizeRequest,
        username: str,
        password: str,
        address: str,
        may_open: Callable[[str, str], Awaitable[bool]] | None = None,
    ) -> SignedIn:
        """Check the user's password and answer with the redirect carrying the code.
        Failed logins are counted per account and per address; past the limit within the
        window every attempt is refused (429), a right password included. An EHR launch's
        patient is the context only for a user who may open that member's record
        (`may_open(fhir_user, patient)`: the care-team access), never the launch alone."""
        keys = [f"user:{username}", f"address:{address}"]
        window = timedelta(seconds=self.login_window)
        # An address may fail on a few accounts (a shared front desk, a NAT) before it is
        # refused; one account only `login_attempts` times.
        account = await self.store.failures(keys[:1], window)
        from_address = await self.store.failures(keys[1:], window)
        if account >= self.login_attempts or from_address >= 4 * self.login_attempts:
            raise OAuthError(
                "temporarily_unavailable", "Too many failed logins; try again later", 429
            )
        user = await self.store.user(username)
        if not verify_password(user.password_hash if user else None, password) or user is None:
            await self.store.record_failure(keys)
            raise OAuthError("access_denied", "Wrong username or password", 401)
        await self.store.clear_failures(f"user:{username}")
        patient = request.patient
        if (
            patient is not None
            and user.fhir_user != f"Patient/{patient}"
            and (
                may_open is None
                or not user.fhir_user
                or not await may_open(user.fhir_user, patient)
            )
        ):
            raise OAuthError(
                "access_denied", "You may not open this member's record from this launch", 403
            )
        scopes = request.scope.split()
        # Standalone launch: a member signing in is the patient in context.
        if (
            patient is None
            and any(s.startswith("patient/") for s in scopes)
            and user.fhir_user.startswith("Patient/")
        ):
            patient = user.fhir_user.split("/", 1)[1]
        if patient is None:
            scopes = [s for s in scopes if not s.startswith("patient/")]
        code = secrets.token_urlsafe(32)
        await self.store.save_grant(
            _digest(code),
            Grant(
                "code",
                request.client_id,
                user.username,
                user.fhir_user,
                patient,
                " ".join(scopes),
                request.redirect_uri,
                request.code_challenge,
                request.nonce,
                _utc(CODE_LIFETIME),
                False,
            ),
        )
        query = urlencode({"code": code, "state": request.state})
        joiner = "&" if "?" in request.redirect_uri else "?"
        return SignedIn(f"{request.redirect_uri}{joiner}{query}", user.fhir_user, patient)

    # -- token ----------------------------------------------------------------------------

    async def token(self, form: Mapping[str, str], issuer: str, fhir_base: str) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return await self._code(form, issuer, fhir_base)
        if grant_type == "client_credentials":
            return await self._client_credentials(form, issuer, fhir_base)
        if grant_type == "refresh_token":
            return await self._refresh(form, issuer, fhir_base)
        raise OAuthError("unsupported_grant_type", "grant_type is not supported")

    async def _authenticate(
        self, form: Mapping[str, str], issuer: str, *, required: bool
    ) -> str | None:
        """The client a private_key_jwt assertion proves, or None when none is sent and the
        client may be public."""
        assertion = form.get("client_assertion")
        if assertion is None:
            if required:
                raise OAuthError("invalid_client", "A client assertion is required", 401)
            return None
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_client", "client_assertion_type must be jwt-bearer", 401)
        client_id = _unverified_issuer(assertion)
        client = await self.store.client(client_id) if client_id else None
        if client is None or client.jwks is None or client_id is None:
            raise OAuthError("invalid_client", "Unknown client or no registered keys", 401)
        try:
            claims = verify_client_assertion(assertion, client_id, client.jwks, f"{issuer}/token")
        except InvalidToken as error:
            raise OAuthError("invalid_client", f"Client assertion refused: {error}", 401) from error
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        if not await self.store.first_use(client_id, str(claims["jti"]), expires):
            raise OAuthError("invalid_client", "Client assertion jti was already used", 401)
        return client_id

    async def _code(self, form: Mapping[str, str], issuer: str, fhir_base: str) -> dict[str, Any]:
        code = form.get("code", "")
        grant = await self.store.take_grant(_digest(code), "code") if code else None
        if grant is None:
            raise OAuthError("invalid_grant", "Unknown, used or expired code")
        client_id = form.get("client_id") or grant.client_id
        authenticated = await self._authenticate(form, issuer, required=False)
        client = await self.store.client(grant.client_id)
        if client is None or client_id != grant.client_id:
            raise OAuthError("invalid_grant", "The code was issued to another client")
        if not client.public and authenticated != grant.client_id:
            raise OAuthError("invalid_client", "A confidential client must authenticate", 401)
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorize request")
        verifier = form.get("code_verifier", "")
        if not verifier or create_s256_code_challenge(verifier) != grant.code_challenge:
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return await self._tokens(grant, issuer, fhir_base)

    async def _tokens(self, grant: Grant, issuer: str, fhir_base: str) -> dict[str, Any]:
        scopes = grant.scope.split()
        issued = issue_access_token(
            self.keys,
            issuer=issuer,
            audience=fhir_base,
            client_id=grant.client_id,
            scope=grant.scope,
            lifetime=self.access_lifetime,
            subject=grant.username,
            fhir_user=grant.fhir_user,
            patient=grant.patient,
        )
        answer: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
            "scope": grant.scope,
        }
        if grant.patient:
            answer["patient"] = grant.patient
        if "openid" in scopes and "fhirUser" in scopes and grant.fhir_user and grant.username:
            answer["id_token"] = issue_id_token(
                self.keys,
                issuer=issuer,
                client_id=grant.client_id,
                subject=grant.username,
                fhir_user=f"{fhir_base.rstrip('/')}/{grant.fhir_user}",
                nonce=grant.nonce,
                lifetime=self.access_lifetime,
            )
        if "offline_access" in scopes or "online_access" in scopes:
            refresh = secrets.token_urlsafe(32)
            await self.store.save_grant(
                _digest(refresh),
                Grant(
                    "refresh",
                    grant.client_id,
                    grant.username,
                    grant.fhir_user,
                    grant.patient,
                    grant.scope,
                    None,
                    None,
                    None,
                    _utc(self.refresh_lifetime),
                    False,
                ),
            )
            answer["refresh_token"] = refresh
        return answer

    async def _refresh(
        self, form: Mapping[str, str], issuer: str, fhir_base: str
    ) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        # Each refresh token is used once; the answer carries its successor.
        grant = await self.store.take_grant(_digest(token), "refresh") if token else None
        if grant is None:
            raise OAuthError("invalid_grant", "Unknown, used, revoked or expired refresh token")
        client = await self.store.client(grant.client_id)
        if client is None:
            raise OAuthError("invalid_grant", "The client is no longer registered")
        authenticated = await self._authenticate(form, issuer, required=not client.public)
        if authenticated is None and form.get("client_id") != grant.client_id:
            raise OAuthError("invalid_grant", "The refresh token was issued to another client")
        if authenticated is not None and authenticated != grant.client_id:
            raise OAuthError("invalid_grant", "The refresh token was issued to another client")
        requested = form.get("scope")
        if requested:
            narrower = [s for s in requested.split() if s in grant.scope.split()]
            grant = Grant(**{**_fields(grant), "scope": " ".join(narrower)})
        return await self._tokens(grant, issuer, fhir_base)

    async def _client_credentials(
        self, form: Mapping[str, str], issuer: str, fhir_base: str
    ) -> dict[str, Any]:
        client_id = await self._authenticate(form, issuer, required=True)
        assert client_id is not None
        client = await self.store.client(client_id)
        assert client is not None
        scope = _granted(form.get("scope", ""), client.scope)
        scope = " ".join(s for s in scope.split() if s.startswith("system/"))
        if not scope:
            raise OAuthError("invalid_scope", "No system/ scope requested that the client has")
        issued = issue_access_token(
            self.keys,
            issuer=issuer,
            audience=fhir_base,
            client_id=client_id,
            scope=scope,
            lifetime=self.access_lifetime,
        )
        return {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
            "scope": scope,
        }

    # -- introspection, revocation, launch --------------------------------------------

    async def introspect(
        self, token: str, resource: ResourceServer, fhir_base: str
    ) -> dict[str, Any]:
        try:
            claims = await resource.claims(token, fhir_base)
        except InvalidToken:
            grant = await self.store.find_grant(_digest(token))
            if grant is None or grant.used or grant.kind != "refresh":
                return {"active": False}
            if grant.expires_at <= datetime.now(UTC):
                return {"active": False}
            return {
                "active": True,
                "client_id": grant.client_id,
                "scope": grant.scope,
                "token_type": "refresh_token",
                "exp": int(grant.expires_at.timestamp()),
            }
        answer = {
            "active": True,
            "client_id": claims.get("client_id"),
            "scope": claims.get("scope"),
            "sub": claims.get("sub"),
            "exp": claims.get("exp"),
            "iat": claims.get("iat"),
            "iss": claims.get("iss"),
            "aud": claims.get("aud"),
            "token_type": "Bearer",
        }
        for name in ("patient", "fhirUser"):
            if claims.get(name):
                answer[name] = claims[name]
        return answer

    async def revoke(self, token: str, resource: ResourceServer, fhir_base: str) -> Revoked | None:
        """RFC 7009: revoke a refresh token or an access token; an unknown token is no
        error (None: nothing was revoked). A request without a token is refused."""
        if not token:
            raise OAuthError("invalid_request", "token is required")
        digest = _digest(token)
        grant = await self.store.find_grant(digest)
        if grant is not None and not grant.used:
            await self.store.revoke_grant(digest)
            kind = "refresh_token" if grant.kind == "refresh" else grant.kind
            return Revoked(kind, grant.client_id, grant.fhir_user, grant.patient)
        try:
            claims = await resource.claims(token, fhir_base)
        except InvalidToken:
            return None
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        await self.store.revoke_access(str(claims.get("jti")), expires)
        resource.forget(str(claims.get("jti")))
        return Revoked(
            "access_token",
            _claim(claims, "client_id"),
            _claim(claims, "fhirUser"),
            _claim(claims, "patient"),
        )

    async def create_launch(self, patient: str | None) -> str:
        launch = secrets.token_urlsafe(16)
        await self.store.save_launch(launch, patient, _utc(LAUNCH_LIFETIME))
        return launch


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _fields(grant: Grant) -> dict[str, Any]:
    return {name: getattr(grant, name) for name in Grant.__slots__}


def _granted(requested: str, allowed: str) -> str:
    """The requested scopes the client is registered for: a resource scope is granted when
    a registered one of the same family covers its type and every permission it asks."""
    registered = allowed.split()
    granted = []
    for scope in requested.split():
        if scope in registered:
            granted.append(scope)
            continue
        asked = parse_scope(scope)
        if asked is None:
            continue
        for other in registered:
            have = parse_scope(other)
            if (
                have is not None
                and have.family == asked.family
                and have.resource_type in ("*", asked.resource_type)
                and asked.permissions <= have.permissions
                and not have.filters
            ):
                granted.append(scope)
                break
    return " ".join(dict.fromkeys(granted))


def _unverified_issuer(assertion: str) -> str | None:
    """The `iss` of an assertion before it is verified: only to find whose keys verify it."""
    import base64
    import json

    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


class ResourceServer:
    """Checks bearer tokens: signed by the built-in server's keys (or an external issuer's
    JWKS), for this FHIR base, unexpired and not revoked."""

    REVOKED_REFRESH = 5.0

    def __init__(
        self,
        store: OAuthStore,
        keys: SigningKeys | None,
        issuer: str | None,
        jwks_url: str | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.external_issuer = issuer
        self.jwks_url = jwks_url
        self._external: KeySet | None = None
        self._external_at = 0.0
        self._revoked: set[str] = set()
        self._revoked_at = 0.0

    def issuer(self, origin: str) -> str:
        return self.external_issuer or f"{origin.rstrip('/')}/auth"

    def _key_set(self) -> KeySet:
        if self.keys is not None:
            return self.keys.key_set()
        if self._external is None:
            raise InvalidToken("the external issuer's keys are not loaded")
        return self._external

    async def _load_external(self) -> None:
        if self.external_issuer is None or time.monotonic() - self._external_at < 60:
            return
        self._external_at = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as http:
            url = self.jwks_url
            if url is None:
                found = await http.get(
                    f"{self.external_issuer.rstrip('/')}/.well-known/openid-configuration"
                )
                url = str(found.json()["jwks_uri"])
            answer = await http.get(url)
            self._external = KeySet.import_key_set(answer.json())

    async def claims(self, token: str, fhir_base: str, origin: str | None = None) -> dict[str, Any]:
        if self.external_issuer is not None and self._external is None:
            await self._load_external()
        issuer = self.issuer(origin or fhir_base.rsplit("/fhir", 1)[0])
        try:
            claims = verify_access_token(
                token, self._key_set, issuer=issuer, audience=fhir_base.rstrip("/")
            )
        except InvalidToken:
            # A key made since this process loaded them (rotation, another process).
            if self.keys is not None:
                self.keys.reload()
            else:
                await self._load_external()
            claims = verify_access_token(
                token, self._key_set, issuer=issuer, audience=fhir_base.rstrip("/")
            )
        if await self._is_revoked(str(claims.get("jti", ""))):
            raise InvalidToken("revoked")
        return claims

    async def principal(self, token: str, fhir_base: str, origin: str) -> Principal:
        return principal(await self.claims(token, fhir_base, origin))

    async def is_revoked(self, jti: str) -> bool:
        """Whether the access token `jti` was revoked (as `claims` checks it)."""
        return await self._is_revoked(jti)

    async def _is_revoked(self, jti: str) -> bool:
        # Revocations are read at most every few seconds, not once per request: a revoked
        # access token stops working within REVOKED_REFRESH seconds on every process.
        if time.monotonic() - self._revoked_at > self.REVOKED_REFRESH:
            self._revoked = await self.store.revoked()
            self._revoked_at = time.monotonic()
        return jti in self._revoked

    def forget(self, jti: str) -> None:
        self._revoked.add(jti)
