"""Access tokens, id_tokens and client assertions as JWTs (joserfc, from the authlib
project): issued by the built-in authorization server, verified by the resource server.

An access token names the client, the granted scopes, the user (`fhirUser`) and the patient
in context; `principal()` turns its verified claims into the `Principal` every store query
is narrowed by.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from cmfhir.auth.keys import ALGORITHM, SigningKeys
from cmfhir.auth.principal import Principal, PrincipalKind
from cmfhir.auth.scopes import parse_scopes

__all__ = [
    "ASSERTION_ALGORITHMS",
    "InvalidToken",
    "IssuedToken",
    "Verified",
    "VerifiedTokens",
    "issue_access_token",
    "issue_id_token",
    "principal",
    "verify_access_token",
    "verify_client_assertion",
]

# SMART Backend Services: RS384 and ES384 client assertions.
ASSERTION_ALGORITHMS = ("RS384", "ES384")
_LEEWAY = 60


class InvalidToken(Exception):
    """The token is missing, malformed, badly signed, expired or not for this server."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int


def issue_access_token(
    keys: SigningKeys,
    *,
    issuer: str,
    audience: str,
    client_id: str,
    scope: str,
    lifetime: int,
    subject: str | None = None,
    fhir_user: str | None = None,
    patient: str | None = None,
) -> IssuedToken:
    now = int(time.time())
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject or client_id,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti,
    }
    if fhir_user:
        claims["fhirUser"] = fhir_user
    if patient:
        claims["patient"] = patient
    key = keys.signing_key()
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
    return IssuedToken(jwt.encode(header, claims, key), jti, now + lifetime)


def issue_id_token(
    keys: SigningKeys,
    *,
    issuer: str,
    client_id: str,
    subject: str,
    fhir_user: str,
    nonce: str | None,
    lifetime: int,
) -> str:
    """OpenID Connect id_token with the SMART `fhirUser` claim (an absolute resource URL)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "sub": subject,
        "fhirUser": fhir_user,
        "iat": now,
        "exp": now + lifetime,
    }
    if nonce:
        claims["nonce"] = nonce
    key = keys.signing_key()
    return jwt.encode({"alg": ALGORITHM, "kid": key.kid}, claims, key)


def _decode(
    token: str, keys: KeySet, algorithms: tuple[str, ...], registry: jwt.JWTClaimsRegistry
) -> dict[str, Any]:
    try:
        decoded = jwt.decode(token, keys, algorithms=list(algorithms))
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidToken(type(error).__name__) from error
    claims: dict[str, Any] = dict(decoded.claims)
    return claims


def verify_access_token(
    token: str,
    keys: Callable[[], KeySet],
    *,
    issuer: str,
    audience: str,
    algorithms: tuple[str, ...] = (ALGORITHM,),
) -> dict[str, Any]:
    """The claims of a valid access token for `audience` from `issuer`."""
    registry = jwt.JWTClaimsRegistry(
        leeway=_LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
    )
    return _decode(token, keys(), algorithms, registry)


def verify_client_assertion(
    assertion: str, client_id: str, jwks: Mapping[str, Any], token_url: str
) -> dict[str, Any]:
    """The claims of a SMART Backend Services client assertion: signed by one of the
    client's registered keys with RS384 or ES384, `iss` = `sub` = the client, `aud` = the
    token endpoint, expiring within five minutes, with a `jti` (replay is checked by the
    caller, against the ids already seen)."""
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise InvalidToken("the client's registered JWKS is not usable") from error
    registry = jwt.JWTClaimsRegistry(
        leeway=_LEEWAY,
        iss={"essential": True, "value": client_id},
        sub={"essential": True, "value": client_id},
        aud={"essential": True, "value": token_url},
        exp={"essential": True},
        jti={"essential": True},
    )
    claims = _decode(assertion, keys, ASSERTION_ALGORITHMS, registry)
    if int(claims["exp"]) > time.time() + 300 + _LEEWAY:
        raise InvalidToken("a client assertion may not live longer than five minutes")
    return claims


def principal(claims: Mapping[str, Any]) -> Principal:
    """The principal an access token's verified claims describe."""
    scope = str(claims.get("scope") or "")
    scopes = tuple(scope.split())
    families = {g.family for g in parse_scopes(scopes)}
    patient = claims.get("patient")
    fhir_user = claims.get("fhirUser")
    if isinstance(fhir_user, str) and "/" in fhir_user:
        # An absolute URL names the same resource by its last two segments.
        fhir_user = "/".join(fhir_user.rstrip("/").split("/")[-2:])
    kind: PrincipalKind = "system"
    if "patient" in families and patient:
        kind = "patient"
    elif "user" in families:
        kind = "user"
    return Principal(
        kind,
        client_id=str(claims.get("client_id") or claims.get("azp") or "") or None,
        fhir_user=fhir_user if isinstance(fhir_user, str) else None,
        patient=str(patient) if patient else None,
        scopes=scopes,
    )


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified access token stands for, kept until `until` (epoch seconds)."""

    principal: Principal
    jti: str
    until: float


class VerifiedTokens:
    """Access tokens already verified, by their exact text and the audience and origin they
    were verified for: checking a token's signature cost a read a third of its CPU, for
    the same few tokens over and over. An entry lasts until the token expires, and at most
    `REVERIFY_S` (so that a withdrawn signing key stops its tokens within that time); a
    token that failed is never kept. Revocation is not decided here: the caller checks it
    on every use, cached or not."""

    REVERIFY_S = 300.0
    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], Verified] = {}

    def get(self, token: str, audience: str, origin: str) -> Verified | None:
        found = self._entries.get((token, audience, origin))
        if found is None:
            return None
        if time.time() >= found.until:
            del self._entries[(token, audience, origin)]
            return None
        return found

    def put(
        self, token: str, audience: str, origin: str, claims: Mapping[str, Any], who: Principal
    ) -> Verified:
        now = time.time()
        until = min(float(claims.get("exp") or now), now + self.REVERIFY_S)
        verified = Verified(who, str(claims.get("jti", "")), until)
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v.until > now}
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
        if until > now:
            self._entries[(token, audience, origin)] = verified
        return verified

    def __len__(self) -> int:
        return len(self._entries)
