"""The authorization server's other steps in the audit trail, each accepted and refused:
token introspection (IHE IUA ITI-102), revocation, the EHR's launch context, and the
authorize request and login of a standalone and an EHR launch. Each is an AuditEvent of
DICOM's User Authentication type with its subtype, outcome and agents, and the member it
concerns finds it under their own token."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from tests.auth.conftest import REDIRECT, Bearer, Smart, practitioner_on_team

DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE = "urn:ihe:event-type-code"
OURS = "https://cmfhir.org/fhir/CodeSystem/audit-event-subtype"


def _events(reader: Bearer, query: str, wanted: int = 1) -> list[dict[str, Any]]:
    """The AuditEvents matching `query`, once `wanted` of them are written (the buffer is
    written every 0.2 s in these tests)."""
    deadline = time.monotonic() + 15
    while True:
        answer = reader.get(f"/AuditEvent?{query}&_count=100")
        assert answer.status_code == 200, answer.text
        events = [e["resource"] for e in answer.json().get("entry", [])]
        if len(events) >= wanted or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def _one(reader: Bearer, rid: str) -> dict[str, Any]:
    (event,) = _events(reader, f"site={rid}")
    return event


def _subtypes(event: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in event.get("subtype", [])}


def _client(event: dict[str, Any]) -> str | None:
    for agent in event["agent"]:
        identifier = agent["who"].get("identifier", {})
        if identifier.get("system") == "urn:cmfhir:client":
            return str(identifier["value"])
    return None


def _entities(event: dict[str, Any]) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


def _member_app(smart: Smart, system: Bearer, scope: str) -> tuple[str, str, str, str]:
    """A member, a public app registered for `scope`, and the member's account."""
    member = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    client_id = smart.public_client(scope)
    username, password = smart.user(f"Patient/{member}")
    return member, client_id, username, password


def _params(client_id: str, scope: str, smart: Smart, **extra: str) -> tuple[dict[str, str], str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "aud": smart.base,
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        **extra,
    }
    return params, verifier


def test_introspection_is_audited(smart: Smart) -> None:
    system = smart.system()
    scope = "launch/patient patient/*.rs"
    member, client_id, username, password = _member_app(smart, system, scope)
    token = smart.login(client_id, username, password, scope)["access_token"]
    url = f"{smart.origin}/auth/introspect"

    rid = uuid.uuid4().hex
    answer = system.post(url, data={"token": token}, headers={"X-Request-Id": rid})
    assert answer.status_code == 200 and answer.json()["active"] is True
    accepted = _one(system, rid)
    assert accepted["type"] == {"system": DCM, "code": "110114"}
    assert _subtypes(accepted) == {(IHE, "ITI-102")}
    assert accepted["outcome"] == "0" and accepted["action"] == "E"
    assert _client(accepted) == smart.system_client  # the caller, not the token's client
    assert f"Patient/{member}" in _entities(accepted)
    assert token not in str(accepted)

    rid = uuid.uuid4().hex
    refused = httpx.post(url, data={"token": token}, headers={"X-Request-Id": rid})
    assert refused.status_code == 401
    event = _one(system, rid)
    assert _subtypes(event) == {(IHE, "ITI-102")} and event["outcome"] == "4"

    # The member finds who checked their token, under their own.
    mine = _events(smart.bearer(token), f"patient={member}&subtype={IHE}|ITI-102")
    assert [e["id"] for e in mine] == [accepted["id"]]


def test_revocation_is_audited(smart: Smart) -> None:
    system = smart.system()
    scope = "launch/patient patient/*.rs offline_access"
    member, client_id, username, password = _member_app(smart, system, scope)
    granted = smart.login(client_id, username, password, scope)
    url = f"{smart.origin}/auth/revoke"

    rid = uuid.uuid4().hex
    revoked = httpx.post(
        url,
        data={"token": granted["refresh_token"], "client_id": client_id},
        headers={"X-Request-Id": rid},
    )
    assert revoked.status_code == 200
    accepted = _one(system, rid)
    assert accepted["type"]["code"] == "110114"
    assert _subtypes(accepted) == {(OURS, "token-revocation")}
    assert accepted["outcome"] == "0"
    assert accepted["agent"][0]["who"] == {"reference": f"Patient/{member}"}
    assert _client(accepted) == client_id
    assert granted["refresh_token"] not in str(accepted)
    # Revoked: the refresh token no longer works.
    again = httpx.post(
        smart.token_url,
        data={"grant_type": "refresh_token", "refresh_token": granted["refresh_token"],
              "client_id": client_id},
    )  # fmt: skip
    assert again.status_code == 400

    rid = uuid.uuid4().hex
    refused = httpx.post(url, data={"client_id": client_id}, headers={"X-Request-Id": rid})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    event = _one(system, rid)
    assert _subtypes(event) == {(OURS, "token-revocation")} and event["outcome"] == "4"
    assert _client(event) == client_id

    me = smart.bearer(granted["access_token"])
    mine = _events(me, f"patient={member}&subtype={OURS}|token-revocation")
    assert [e["id"] for e in mine] == [accepted["id"]]


def test_ehr_launch_is_audited(smart: Smart) -> None:
    system = smart.system()
    scope = "launch patient/*.rs"
    member, client_id, _, _ = _member_app(smart, system, scope)
    url = f"{smart.origin}/auth/launch"

    rid = uuid.uuid4().hex
    created = system.post(url, json={"patient": member}, headers={"X-Request-Id": rid})
    assert created.status_code == 200, created.text
    context = _one(system, rid)
    assert _subtypes(context) == {(OURS, "launch-context")} and context["outcome"] == "0"
    assert _client(context) == smart.system_client
    assert f"Patient/{member}" in _entities(context)
    # A member's token may not create one: refused, and recorded as refused.
    rid = uuid.uuid4().hex
    own = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    forbidden = own.post(url, json={"patient": member}, headers={"X-Request-Id": rid})
    assert forbidden.status_code == 403
    assert _one(system, rid)["outcome"] == "4"

    # The app's authorize request with the launch: accepted, naming the launch's patient;
    # with a launch that does not exist: refused.
    # The user signing in is on the member's care team (the launch alone opens nothing).
    practitioner = practitioner_on_team(system, member)
    username, password = smart.user(practitioner)
    params, verifier = _params(client_id, scope, smart, launch=created.json()["launch"])
    rid = uuid.uuid4().hex
    page = httpx.get(f"{smart.origin}/auth/authorize", params=params, headers={"X-Request-Id": rid})
    assert page.status_code == 200
    started = _one(system, rid)
    assert started["type"]["code"] == "110114" and started["outcome"] == "0"
    assert _subtypes(started) == {(OURS, "ehr-launch")}
    assert _client(started) == client_id
    assert f"Patient/{member}" in _entities(started)
    unknown, _ = _params(client_id, scope, smart, launch="no-such-launch")
    rid = uuid.uuid4().hex
    page = httpx.get(
        f"{smart.origin}/auth/authorize", params=unknown, headers={"X-Request-Id": rid}
    )
    assert page.status_code == 400
    refused = _one(system, rid)
    assert _subtypes(refused) == {(OURS, "ehr-launch")} and refused["outcome"] == "4"

    # The login that completes it: the user and the patient in context.
    rid = uuid.uuid4().hex
    answer = httpx.post(
        f"{smart.origin}/auth/authorize",
        params=params,
        data={"username": username, "password": password},
        headers={"X-Request-Id": rid},
    )
    assert answer.status_code == 303
    login = _one(system, rid)
    assert _subtypes(login) == {(DCM, "110122"), (OURS, "ehr-launch")}
    assert login["agent"][0]["who"] == {"reference": practitioner}
    assert f"Patient/{member}" in _entities(login)
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    token = httpx.post(
        smart.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
              "client_id": client_id, "code_verifier": verifier},
    )  # fmt: skip
    assert token.status_code == 200, token.text

    # The member sees their record's launch context, the launch and the login.
    reader = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    mine = {e["id"] for e in _events(reader, f"patient={member}&type={DCM}|110114", 4)}
    assert {context["id"], started["id"], login["id"]} <= mine


def test_standalone_launch_is_audited(smart: Smart) -> None:
    system = smart.system()
    scope = "launch/patient patient/*.rs"
    member, client_id, username, password = _member_app(smart, system, scope)
    params, _ = _params(client_id, scope, smart)
    rid = uuid.uuid4().hex
    page = httpx.get(f"{smart.origin}/auth/authorize", params=params, headers={"X-Request-Id": rid})
    assert page.status_code == 200
    started = _one(system, rid)
    assert _subtypes(started) == {(OURS, "standalone-launch")} and started["outcome"] == "0"
    assert _client(started) == client_id
    # A redirect URI that is not the client's: refused.
    rid = uuid.uuid4().hex
    page = httpx.get(
        f"{smart.origin}/auth/authorize",
        params={**params, "redirect_uri": REDIRECT + "/other"},
        headers={"X-Request-Id": rid},
    )
    assert page.status_code == 400
    assert _one(system, rid)["outcome"] == "4"

    rid = uuid.uuid4().hex
    answer = httpx.post(
        f"{smart.origin}/auth/authorize",
        params=params,
        data={"username": username, "password": password},
        headers={"X-Request-Id": rid},
    )
    assert answer.status_code == 303
    login = _one(system, rid)
    assert _subtypes(login) == {(DCM, "110122"), (OURS, "standalone-launch")}
    assert login["agent"][0]["who"] == {"reference": f"Patient/{member}"}
    assert login["agent"][0]["altId"] == username
    reader = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    mine = _events(reader, f"patient={member}&subtype={OURS}|standalone-launch")
    assert [e["id"] for e in mine] == [login["id"]]
