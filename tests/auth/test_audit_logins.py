"""Logins in the audit trail: a failed and a successful submission of the authorize form,
the token grant that follows (the member reads it under their own token), and a backend
client's refused and granted token requests, each an AuditEvent of DICOM's User
Authentication type with the client and the account name, and never a secret."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from tests.auth.conftest import Bearer, Smart

LOGIN = "subtype=http://dicom.nema.org/resources/ontology/DCM|110122"


def _logins(reader: Bearer, query: str, wanted: int) -> list[dict[str, Any]]:
    """The login AuditEvents matching `query`, once `wanted` of them are written (the trail
    is written from its buffer every 0.2 s in these tests)."""
    deadline = time.monotonic() + 15
    while True:
        answer = reader.get(f"/AuditEvent?{LOGIN}&{query}&_count=100")
        assert answer.status_code == 200, answer.text
        events = [e["resource"] for e in answer.json().get("entry", [])]
        if len(events) >= wanted or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_logins_and_token_grants_are_audited(smart: Smart) -> None:
    system = smart.system()
    member = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    scope = "launch/patient patient/*.rs"
    client_id = smart.public_client(scope)
    username, password = smart.user(f"Patient/{member}")

    refused, _, _ = smart.authorize(client_id, username, "wrong password", scope)
    assert refused.status_code >= 400
    token = smart.login(client_id, username, password, scope)
    assert token["patient"] == member

    (failed,) = _logins(system, f"altid={username}&outcome=4", 1)
    assert failed["agent"][1]["who"]["identifier"]["value"] == client_id
    assert failed["agent"][0]["network"]["address"] == "127.0.0.1"
    assert failed["type"]["code"] == "110114"
    accepted = _logins(system, f"altid={username}&outcome=0", 1)
    assert len(accepted) == 1  # the form; the code exchange names no account name
    # The form and the code exchange (IHE IUA's ITI-71) name the user and the member, so
    # the member finds both.
    me = smart.bearer(token["access_token"])
    (grant,) = _logins(me, f"patient={member}&subtype=urn:ihe:event-type-code|ITI-71", 1)
    assert {e["id"] for e in _logins(me, f"patient={member}", 2)} == {
        accepted[0]["id"],
        grant["id"],
    }
    assert accepted[0]["agent"][0]["who"]["reference"] == f"Patient/{member}"
    assert grant["agent"][0]["who"]["reference"].endswith(f"Patient/{member}")
    assert grant["outcome"] == "0"
    written = json.dumps([failed, *accepted, grant])
    assert password not in written and token["access_token"] not in written


def _client_logins(reader: Bearer, query: str, client: str) -> list[dict[str, Any]]:
    """The login AuditEvents matching `query` whose last agent is `client`, once one is
    written (other tests' logins may already match `query`)."""
    deadline = time.monotonic() + 15
    while True:
        found = [
            e
            for e in _logins(reader, query, 1)
            if e["agent"][-1]["who"].get("identifier", {}).get("value") == client
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_backend_token_requests_are_audited(smart: Smart) -> None:
    system = smart.system()
    stranger = smart.assertion(smart.system_client, aud="https://elsewhere.example/token")
    refused = smart.backend_token(smart.system_client, "system/*.rs", stranger)
    assert refused.status_code in (400, 401)
    granted = httpx.post(
        smart.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/Patient.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": smart.assertion(smart.system_client),
        },
    )
    assert granted.status_code == 200, granted.text
    assert _client_logins(system, "outcome=4", smart.system_client)
    assert _client_logins(system, "outcome=0", smart.system_client)
