"""Signing-key rotation, and the audit trail's buffer written when the server stops."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from tests.auth.conftest import Bearer, Smart

from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings


def test_rotated_keys_keep_earlier_tokens_valid(smart: Smart) -> None:
    before = smart.as_token("system/Patient.rs")
    assert before.get("/Patient?_count=1").status_code == 200
    smart.cli("keys", "rotate")
    keys = httpx.get(f"{smart.origin}/auth/jwks").json()["keys"]
    assert len(keys) >= 2
    after = smart.as_token("system/Patient.rs")  # signed with the new key
    assert after.get("/Patient?_count=1").status_code == 200
    assert before.get("/Patient?_count=1").status_code == 200


def test_buffered_audit_events_are_written_at_a_clean_stop(
    smart: Smart, database_url: str, tmp_path_factory: pytest.TempPathFactory, start_server: Any
) -> None:
    system = smart.system()
    created = system.post("/Patient", json={"resourceType": "Patient"})
    member = created.json()["id"]
    data_dir = tmp_path_factory.mktemp("stop-data")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        auth="smart",
        audit=True,
        audit_interval_s=3600,  # nothing is written before the stop
    )
    tag = uuid.uuid4().hex
    with start_server(settings) as running:
        token = issue_access_token(
            SigningKeys(data_dir / "auth-keys"),
            issuer=running.base.rsplit("/fhir", 1)[0] + "/auth",
            audience=running.base,
            client_id=f"stop-{tag}",
            scope="system/*.rs",
            lifetime=300,
        )
        reader = Bearer(running.base, token.token)
        assert reader.get(f"/Patient/{member}").status_code == 200
        trail = system.get(f"/AuditEvent?patient={member}&_count=1000").json()
        assert not [e for e in trail.get("entry", []) if _client(e) == f"stop-{tag}"]
    trail = system.get(f"/AuditEvent?patient={member}&_count=1000").json()
    assert [e for e in trail.get("entry", []) if _client(e) == f"stop-{tag}"]


def _client(entry: dict[str, Any]) -> str | None:
    agents = entry["resource"]["agent"]
    return agents[1]["who"]["identifier"]["value"] if len(agents) > 1 else None
