"""The read side of the trail over HTTP: vread, instance and type history, `$everything` and
an `$export` kick-off each leave an AuditEvent naming the interaction, the member and the
query; and `$everything` under a member's token returns that member's record only."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.auth.conftest import Bearer, Smart


def _sent(bearer: Bearer, url: str, **kwargs: Any) -> tuple[str, Any]:
    rid = uuid.uuid4().hex
    answer = bearer.get(url, headers={"X-Request-Id": rid, **kwargs.pop("headers", {})}, **kwargs)
    return rid, answer


def _event(system: Bearer, rid: str) -> dict[str, Any]:
    """The one AuditEvent of a request (its request id is their source.site), once the
    buffer has written it."""
    deadline = time.monotonic() + 15
    while True:
        answer = system.get(f"/AuditEvent?site={rid}")
        assert answer.status_code == 200, answer.text
        found = [e["resource"] for e in answer.json().get("entry", [])]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.2)


def _patient(system: Bearer) -> str:
    answer = system.post("/Patient", json={"resourceType": "Patient"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_history_vread_everything_and_export_are_audited(smart: Smart) -> None:
    system = smart.system()
    member = _patient(system)
    reader = smart.as_token("user/*.rs", fhir_user="Practitioner/auditor")
    wide = smart.system()
    cases = [
        (system, f"/Patient/{member}/_history/1", "vread", {}),
        (system, f"/Patient/{member}/_history", "history-instance", {}),
        (system, "/Patient/_history?_count=1", "history-type", {}),
        (system, f"/Patient/{member}/$everything", "operation", {}),
        (wide, "/Patient/$export?_type=Patient", "operation", {"Prefer": "respond-async"}),
    ]
    sent = []
    for bearer, url, interaction, headers in cases:
        rid, answer = _sent(bearer, url, headers={"Accept": "application/fhir+json", **headers})
        assert answer.status_code in (200, 202), (url, answer.text)
        sent.append((rid, url, interaction))
    refused_rid, refused = _sent(reader, f"/Patient/{member}/_history")
    assert refused.status_code in (403, 404)
    for rid, url, interaction in sent:
        event = _event(system, rid)
        assert event["subtype"][0]["code"] == interaction, url
        assert event["outcome"] == "0"
        whats = [x["what"]["reference"] for x in event.get("entity", []) if "what" in x]
        if "_history?" not in url and "$export" not in url:
            assert f"Patient/{member}" in whats, (url, whats)
    export = _event(system, sent[-1][0])
    assert any("query" in x for x in export["entity"])
    refused_event = _event(system, refused_rid)
    assert refused_event["outcome"] == "4"
    assert refused_event["agent"][0]["who"] == {"reference": "Practitioner/auditor"}


def test_everything_under_a_member_token_holds_their_record_only(smart: Smart) -> None:
    system = smart.system()
    member, other = _patient(system), _patient(system)
    for patient in (member, other):
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "everything"},
            "subject": {"reference": f"Patient/{patient}"},
        }
        assert system.post("/Observation", json=observation).status_code == 201
    me = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    answer = me.get(f"/Patient/{member}/$everything")
    assert answer.status_code == 200, answer.text
    entries = [e["resource"] for e in answer.json().get("entry", [])]
    observations = [e for e in entries if e["resourceType"] == "Observation"]
    assert [o["subject"]["reference"] for o in observations] == [f"Patient/{member}"]
    assert {e["id"] for e in entries if e["resourceType"] == "Patient"} == {member}
    assert other not in answer.text  # nor any other resource about the other member
    assert me.get(f"/Patient/{other}/$everything").status_code in (403, 404)
