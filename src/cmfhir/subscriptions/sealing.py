"""Sealing what a Subscription must carry but never show: its channel headers (an
`Authorization` for the endpoint) and the principal that created it. Both are encrypted
(Fernet: AES-128-CBC with an HMAC) into one extension value, bound to the Subscription's id
and endpoint, so a copy pasted into another Subscription, or kept while the endpoint changes,
opens to nothing. Websocket binding tokens are Fernet tokens of the same key with a TTL."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from cmfhir.auth.principal import Principal

__all__ = ["Sealed", "Sealer"]

_OPENED_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Sealed:
    headers: tuple[str, ...]
    principal: Principal


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        # Seals opened so far (the sender opens one per send): a seal is immutable, so
        # what it opened to stays true.
        self._opened: dict[tuple[str, str, str | None], Sealed | None] = {}

    def seal(self, subscription_id: str, endpoint: str | None, sealed: Sealed) -> str:
        payload = {
            "id": subscription_id,
            "endpoint": endpoint,
            "headers": list(sealed.headers),
            "principal": asdict(sealed.principal),
        }
        return self._fernet.encrypt(json.dumps(payload).encode()).decode()

    def open(self, token: str | None, subscription_id: str, endpoint: str | None) -> Sealed | None:
        """What was sealed for this Subscription and endpoint, or None."""
        if not token:
            return None
        key = (token, subscription_id, endpoint)
        if key in self._opened:
            return self._opened[key]
        if len(self._opened) >= _OPENED_KEPT:
            self._opened.clear()
        self._opened[key] = opened = self._open(token, subscription_id, endpoint)
        return opened

    def _open(self, token: str, subscription_id: str, endpoint: str | None) -> Sealed | None:
        try:
            payload: dict[str, Any] = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            return None
        if payload.get("id") != subscription_id or payload.get("endpoint") != endpoint:
            return None
        principal = dict(payload["principal"])
        principal["scopes"] = tuple(principal.get("scopes") or ())
        return Sealed(tuple(payload.get("headers") or ()), Principal(**principal))

    def binding_token(self, subscription_id: str) -> str:
        return self._fernet.encrypt(json.dumps({"ws": subscription_id}).encode()).decode()

    def bound_subscription(self, token: str, ttl_s: int) -> str | None:
        """The Subscription a binding token names, if it is this key's and not expired."""
        try:
            payload = json.loads(self._fernet.decrypt(token.encode(), ttl=ttl_s))
        except (InvalidToken, ValueError):
            return None
        found = payload.get("ws") if isinstance(payload, dict) else None
        return found if isinstance(found, str) else None
