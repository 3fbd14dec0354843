"""The SMART flows over real HTTP: discovery, 401/403, backend services with a signed
client assertion, authorization code + PKCE, refresh, id_token, introspection, revocation,
EHR launch, rate-limited logins, and refusing to start on bad settings."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from tests.auth.conftest import REDIRECT, Bearer, Smart, practitioner_on_team

from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings, check_auth_binding


def _patient(system: Bearer, name: str) -> str:
    answer = system.post("/Patient", json={"resourceType": "Patient", "name": [{"family": name}]})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_discovery_and_metadata_are_public(smart: Smart) -> None:
    found = httpx.get(f"{smart.base}/.well-known/smart-configuration")
    assert found.status_code == 200
    config = found.json()
    assert config["issuer"] == f"{smart.origin}/auth"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "client_credentials"} <= set(config["grant_types_supported"])
    for capability in ("launch-ehr", "client-confidential-asymmetric", "permission-v2"):
        assert capability in config["capabilities"]
    keys = httpx.get(config["jwks_uri"]).json()
    assert keys["keys"] and "d" not in keys["keys"][0]
    metadata = httpx.get(f"{smart.base}/metadata")
    assert metadata.status_code == 200
    security = metadata.json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == config["token_endpoint"]
    assert httpx.get(f"{smart.origin}/healthz").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="no-token"),
        pytest.param("Bearer invalid", id="garbage"),
        pytest.param("Basic dXNlcjpwYXNz", id="not-bearer"),
    ],
)
def test_no_valid_token_is_401(smart: Smart, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    answer = httpx.get(f"{smart.base}/Patient", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_expired_foreign_or_wrong_audience_tokens_are_401(smart: Smart) -> None:
    keys = SigningKeys(smart.data_dir / "auth-keys")
    issuer = f"{smart.origin}/auth"

    def token(**overrides: object) -> str:
        args: dict[str, object] = {
            "issuer": issuer,
            "audience": smart.base,
            "client_id": "x",
            "scope": "system/*.rs",
            "lifetime": 300,
            **overrides,
        }
        return issue_access_token(keys, **args).token  # type: ignore[arg-type]

    assert smart.bearer(token()).get("/Patient").status_code == 200  # the control
    assert smart.bearer(token(lifetime=-600)).get("/Patient").status_code == 401
    assert smart.bearer(token(audience="https://other/fhir")).get("/Patient").status_code == 401
    assert smart.bearer(token(issuer="https://evil/auth")).get("/Patient").status_code == 401
    stranger = RSAKey.generate_key(2048, {"kid": next(iter(keys.kids()))})
    forged = jwt.encode(
        {"alg": "RS256", "kid": stranger.kid},
        {"iss": issuer, "aud": smart.base, "exp": int(time.time()) + 300, "scope": "system/*.rs"},
        stranger,
    )
    assert smart.bearer(forged).get("/Patient").status_code == 401


def test_backend_services_scopes_allow_and_deny(smart: Smart) -> None:
    answer = smart.backend_token(smart.system_client, "system/Patient.rs")
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "system/Patient.rs"
    reader = smart.bearer(answer.json()["access_token"])
    assert reader.get("/Patient").status_code == 200
    denied = reader.get("/Observation")
    assert denied.status_code == 403
    assert denied.json()["issue"][0]["code"] == "forbidden"
    write = reader.post("/Patient", json={"resourceType": "Patient"})
    assert write.status_code == 403


def test_client_assertion_replay_and_bad_signature_refused(smart: Smart) -> None:
    assertion = smart.assertion(smart.system_client)
    assert smart.backend_token(smart.system_client, "system/*.rs", assertion).status_code == 200
    replay = smart.backend_token(smart.system_client, "system/*.rs", assertion)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    other = RSAKey.generate_key(2048, {"kid": "test"})
    claims = {
        "iss": smart.system_client,
        "sub": smart.system_client,
        "aud": smart.token_url,
        "exp": int(time.time()) + 200,
        "jti": uuid.uuid4().hex,
    }
    forged = jwt.encode({"alg": "RS384", "kid": "test"}, claims, other, algorithms=["RS384"])
    assert smart.backend_token(smart.system_client, "system/*.rs", forged).status_code == 401
    wrong_aud = smart.assertion(smart.system_client, aud="https://elsewhere/token")
    assert smart.backend_token(smart.system_client, "system/*.rs", wrong_aud).status_code == 401


def test_standalone_patient_launch_pkce_refresh_introspect_revoke(smart: Smart) -> None:
    system = smart.system()
    member = _patient(system, "Standalone")
    client_id = smart.public_client("openid fhirUser launch/patient patient/*.rs offline_access")
    username, password = smart.user(f"Patient/{member}")
    token = smart.login(
        client_id,
        username,
        password,
        "openid fhirUser launch/patient patient/*.rs offline_access",
    )
    assert token["patient"] == member
    identity = jwt.decode(token["id_token"], SigningKeys(smart.data_dir / "auth-keys").key_set())
    assert identity.claims["fhirUser"] == f"{smart.base}/Patient/{member}"
    own = smart.bearer(token["access_token"])
    assert own.get(f"/Patient/{member}").status_code == 200
    assert own.post("/Patient", json={"resourceType": "Patient"}).status_code == 403

    # Refresh: a new access token; the refresh token is single use.
    refreshed = httpx.post(
        smart.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    again = httpx.post(
        smart.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": client_id,
        },
    )
    assert again.status_code == 400
    fresh = refreshed.json()["access_token"]
    assert smart.bearer(fresh).get(f"/Patient/{member}").status_code == 200

    # Introspection (the caller needs a token of its own), then revocation.
    info = system.post(f"{smart.origin}/auth/introspect", data={"token": fresh}).json()
    assert info["active"] is True and info["patient"] == member
    assert info["scope"] == token["scope"]
    anonymous = httpx.post(f"{smart.origin}/auth/introspect", data={"token": fresh})
    assert anonymous.status_code == 401
    assert httpx.post(f"{smart.origin}/auth/revoke", data={"token": fresh}).status_code == 200
    info = system.post(f"{smart.origin}/auth/introspect", data={"token": fresh}).json()
    assert info == {"active": False}
    deadline = time.monotonic() + 10
    while smart.bearer(fresh).get(f"/Patient/{member}").status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works"
        time.sleep(0.5)


def test_pkce_and_redirect_uri_are_enforced(smart: Smart) -> None:
    system = smart.system()
    member = _patient(system, "Pkce")
    client_id = smart.public_client("launch/patient patient/*.rs")
    username, password = smart.user(f"Patient/{member}")
    answer, _, _ = smart.authorize(client_id, username, password, "launch/patient patient/*.rs")
    code = httpx.URL(answer.headers["location"]).params["code"]
    wrong = httpx.post(
        smart.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": "not-the-verifier-" + "x" * 40,
        },
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # A redirect URI that is not exactly the registered one: refused on the page, no redirect.
    page = httpx.get(
        f"{smart.origin}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT + "/other",
            "state": "s",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
    )
    assert page.status_code == 400 and "location" not in page.headers
    # No PKCE: refused.
    page = httpx.get(
        f"{smart.origin}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "state": "s",
        },
    )
    assert page.status_code == 400


def test_failed_logins_are_rate_limited(smart: Smart) -> None:
    system = smart.system()
    member = _patient(system, "Limited")
    client_id = smart.public_client("launch/patient patient/*.rs")
    username, password = smart.user(f"Patient/{member}")
    for _ in range(5):
        answer, _, _ = smart.authorize(client_id, username, "wrong password", "patient/*.rs")
        assert answer.status_code == 401
        assert 'role="alert"' in answer.text
    answer, _, _ = smart.authorize(client_id, username, password, "patient/*.rs")
    assert answer.status_code == 429


def test_ehr_launch_context(smart: Smart) -> None:
    system = smart.system()
    member = _patient(system, "Launched")
    launch = system.post(f"{smart.origin}/auth/launch", json={"patient": member})
    assert launch.status_code == 200, launch.text
    client_id = smart.public_client("launch patient/*.rs openid fhirUser")
    username, password = smart.user(practitioner_on_team(system, member))
    token = smart.login(
        client_id, username, password, "launch patient/*.rs", launch=launch.json()["launch"]
    )
    assert token["patient"] == member
    assert smart.bearer(token["access_token"]).get(f"/Patient/{member}").status_code == 200


def test_an_ehr_launch_opens_only_a_member_the_user_may_see(smart: Smart) -> None:
    """A launch context names a patient; signing in with it gives patient/ access to that
    member only to a user on their care team. A user token may not create a launch for a
    member it cannot see (404, as a read would say)."""
    system = smart.system()
    member = _patient(system, "Guarded")
    launch = system.post(f"{smart.origin}/auth/launch", json={"patient": member}).json()["launch"]
    client_id = smart.public_client("launch patient/*.rs openid fhirUser")
    outsider = system.post("/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    username, password = smart.user(f"Practitioner/{outsider}")
    answer, _, _ = smart.authorize(
        client_id, username, password, "launch patient/*.rs", launch=launch
    )
    assert answer.status_code == 403, answer.text
    assert "may not open this member" in answer.text and "location" not in answer.headers
    # On the team (the same launch, another user): allowed.
    username, password = smart.user(practitioner_on_team(system, member))
    token = smart.login(client_id, username, password, "launch patient/*.rs", launch=launch)
    assert token["patient"] == member
    # A care manager's own token: a launch for their member, none for another.
    nurse = smart.as_token("user/*.rs", fhir_user=practitioner_on_team(system, member))
    assert nurse.post(f"{smart.origin}/auth/launch", json={"patient": member}).status_code == 200
    stranger = _patient(system, "Stranger")
    refused = nurse.post(f"{smart.origin}/auth/launch", json={"patient": stranger})
    assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome"


def test_settings_refuse_unknown_mode_and_open_non_loopback() -> None:
    with pytest.raises(ValueError, match="not one of"):
        Settings(auth="bogus")
    assert Settings().auth in ("smart", "off")  # the suite sets off; the default is smart
    assert Settings.model_fields["auth"].default == "smart"
    off = Settings(auth="off")
    with pytest.raises(ValueError, match="loopback"):
        check_auth_binding(off, "0.0.0.0")
    assert "OFF" in (check_auth_binding(off, "127.0.0.1") or "")
    assert check_auth_binding(Settings(auth="off", auth_off_i_understand=True), "0.0.0.0")
    assert check_auth_binding(Settings(auth="smart"), "0.0.0.0") is None


def test_reports_need_a_token(smart: Smart) -> None:
    """`/reports` is outside `/fhir` but under the same authorization: no token is 401; a
    backend token that may search what the report reads runs it (narrowed by the access
    predicate: tests/auth/test_report_access.py), and one that may not is 403."""
    url = f"{smart.origin}/reports/contact-compliance"
    with httpx.Client(timeout=30) as http:
        anonymous = http.get(url, params={"period": "2026-10"})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        for scope, status in (("system/*.rs", 200), ("system/Observation.rs", 403)):
            answer = smart.backend_token(smart.system_client, scope)
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            found = http.get(
                url, params={"period": "2026-10"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert found.status_code == status, found.text
            if status == 403:
                assert found.json()["resourceType"] == "OperationOutcome"
