"""The authorization server's signing keys: generated on first start into the data
directory, rotated by `cmfhir keys rotate`; a retired key stays in the JWKS until the tokens
it signed have expired (docs/security.md)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

__all__ = ["ALGORITHM", "SigningKeys"]

ALGORITHM = "RS256"


class SigningKeys:
    """The key files in `directory` (one JSON file per key: the private JWK, when it was
    made and, once replaced, when it was retired)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._entries: list[dict[str, Any]] = []
        self.reload()

    def reload(self) -> None:
        entries = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                entries.append(json.loads(path.read_text(encoding="utf-8")))
        entries.sort(key=lambda e: e["created"])
        self._entries = entries

    def ensure(self) -> None:
        """Make the first key if there is none."""
        if not self._entries:
            self._add()

    def _add(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        kid = uuid.uuid4().hex
        key = RSAKey.generate_key(
            2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM}, private=True
        )
        entry = {"created": time.time(), "retired": None, "jwk": key.as_dict(private=True)}
        path = self.directory / f"{kid}.json"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(entry, out)
        self.reload()
        return kid

    def rotate(self, keep_seconds: float) -> str:
        """A new current key; the previous ones are retired now and their files removed once
        `keep_seconds` (the longest token lifetime) have passed since they were retired."""
        now = time.time()
        for path in sorted(self.directory.glob("*.json")):
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["retired"] is None:
                entry["retired"] = now
                path.write_text(json.dumps(entry), encoding="utf-8")
            elif entry["retired"] + keep_seconds < now:
                path.unlink()
        return self._add()

    def signing_key(self) -> RSAKey:
        """The newest key."""
        if not self._entries:
            raise RuntimeError("no signing key: run the server once, or `cmfhir keys rotate`")
        return RSAKey.import_key(self._entries[-1]["jwk"])

    def key_set(self) -> KeySet:
        return KeySet([RSAKey.import_key(e["jwk"]) for e in self._entries])

    def public_jwks(self) -> dict[str, Any]:
        return dict(self.key_set().as_dict(private=False))

    def kids(self) -> set[str]:
        return {str(e["jwk"]["kid"]) for e in self._entries}
