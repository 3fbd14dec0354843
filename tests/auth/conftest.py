"""A server with CMFHIR_AUTH=smart on the test database, and the clients that drive its
real flows over HTTP: a backend client signing its assertions with a test key, and the
authorize form with PKCE for users."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from cmfhir import cli
from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings

REDIRECT = "https://app.example/callback"
SYSTEM_SCOPE = "system/*.cruds system/cmfhir-sensitive.read"


def run_cli(database_url: str, data_dir: Path, *args: str) -> None:
    saved = dict(os.environ)
    os.environ.update({"CMFHIR_DATABASE_URL": database_url, "CMFHIR_DATA_DIR": str(data_dir)})
    try:
        assert cli.main(list(args)) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass
class Bearer:
    """Requests with one bearer token, each on a connection of its own (nothing to close)."""

    base: str
    token: str

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if not url.startswith("http"):
            url = self.base + url
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(method, url, headers=headers, timeout=60, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@dataclass
class Smart:
    """The running server and what the tests registered on it."""

    base: str
    database_url: str
    data_dir: Path
    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-384", {"kid": "test"}))
    system_client: str = ""

    @property
    def origin(self) -> str:
        return self.base.rsplit("/fhir", 1)[0]

    @property
    def token_url(self) -> str:
        return f"{self.origin}/auth/token"

    def cli(self, *args: str) -> None:
        run_cli(self.database_url, self.data_dir, *args)

    def public_client(self, scope: str) -> str:
        """A public app registered for `scope` (redirect URI `REDIRECT`): its client id."""
        client_id = f"app-{uuid.uuid4().hex[:8]}"
        self.cli(
            "client", "register", "--client-id", client_id, "--public",
            "--redirect-uri", REDIRECT, "--scope", scope,
        )  # fmt: skip
        return client_id

    def user(self, fhir_user: str) -> tuple[str, str]:
        """An account whose fhirUser is `fhir_user`: (username, password)."""
        username, password = f"u-{uuid.uuid4().hex[:8]}", "correct horse battery"
        self.cli(
            "user", "add", "--username", username, "--password", password,
            "--fhir-user", fhir_user,
        )  # fmt: skip
        return username, password

    def assertion(self, client_id: str, **overrides: Any) -> str:
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.token_url,
            "exp": int(time.time()) + 240,
            "jti": uuid.uuid4().hex,
            **overrides,
        }
        return jwt.encode({"alg": "ES384", "kid": "test"}, claims, self.key, algorithms=["ES384"])

    def backend_token(self, client_id: str, scope: str, assertion: str | None = None) -> Any:
        return httpx.post(
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion or self.assertion(client_id),
            },
        )

    def system(self) -> Bearer:
        """A client acting with the system/*.cruds backend token."""
        answer = self.backend_token(self.system_client, SYSTEM_SCOPE)
        assert answer.status_code == 200, answer.text
        return self.bearer(answer.json()["access_token"])

    def as_token(
        self, scope: str, *, fhir_user: str | None = None, patient: str | None = None
    ) -> Bearer:
        """A token as the built-in server issues it after a login (signed with its keys):
        the flows themselves are driven in test_flows.py."""
        issued = issue_access_token(
            SigningKeys(self.data_dir / "auth-keys"),
            issuer=f"{self.origin}/auth",
            audience=self.base,
            client_id="test-app",
            scope=scope,
            lifetime=600,
            subject="tester",
            fhir_user=fhir_user,
            patient=patient,
        )
        return self.bearer(issued.token)

    def bearer(self, token: str) -> Bearer:
        return Bearer(self.base, token)

    def authorize(
        self,
        client_id: str,
        username: str,
        password: str,
        scope: str,
        **extra: str,
    ) -> tuple[httpx.Response, str, str]:
        """The authorize form submitted: (the answer, the state sent, the PKCE verifier)."""
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        state = secrets.token_urlsafe(8)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": state,
            "aud": self.base,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }
        url = f"{self.origin}/auth/authorize"
        page = httpx.get(url, params=params)
        assert page.status_code == 200, page.text
        assert "<form" in page.text and 'name="password"' in page.text
        answer = httpx.post(url, params=params, data={"username": username, "password": password})
        return answer, state, verifier

    def login(self, client_id: str, username: str, password: str, scope: str, **extra: str) -> Any:
        """The token answer of a full authorization-code + PKCE flow."""
        answer, state, verifier = self.authorize(client_id, username, password, scope, **extra)
        assert answer.status_code == 303, answer.text
        location = answer.headers["location"]
        assert location.startswith(REDIRECT + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == [state]
        token = httpx.post(
            self.token_url,
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": REDIRECT,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        assert token.status_code == 200, token.text
        return token.json()


@pytest.fixture(scope="package")
def smart(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, start_server: Any
) -> Iterator[Smart]:
    data_dir = tmp_path_factory.mktemp("auth-data")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        auth="smart",
        login_attempts=5,
        audit=True,
        audit_interval_s=0.2,
    )
    with start_server(settings) as running:
        state = Smart(running.base, database_url, data_dir)
        jwks = tmp_path_factory.mktemp("jwks") / "backend.json"
        jwks.write_text(
            json.dumps(KeySet([state.key]).as_dict(private=False)),
            encoding="utf-8",
        )
        state.system_client = f"backend-{uuid.uuid4().hex[:8]}"
        state.cli(
            "client", "register", "--client-id", state.system_client,
            "--jwks-file", str(jwks), "--scope", SYSTEM_SCOPE + " system/Patient.rs",
        )  # fmt: skip
        yield state


def practitioner_on_team(system: Any, member: str) -> str:
    """A new Practitioner on the member's active CareTeam (`system`: a system-token
    client): `Practitioner/ID`."""
    answer = system.post("/Practitioner", json={"resourceType": "Practitioner"})
    assert answer.status_code == 201, answer.text
    practitioner = f"Practitioner/{answer.json()['id']}"
    team = {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": {"reference": f"Patient/{member}"},
        "participant": [{"member": {"reference": practitioner}}],
    }
    assert system.post("/CareTeam", json=team).status_code == 201
    return practitioner
