"""What each token sees, over HTTP: patient/ scopes narrowed to the member's compartment
(no leak through includes, chains, _has, history or Bundles), granular scopes, user/ scopes
by care-team membership granted and revoked, and sensitive resources shown only with a
Consent."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from tests.auth.conftest import Bearer, Smart

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"


@dataclass
class World:
    tag: str  # a code on every Observation of this module, to search them alone
    member: str
    other: str
    other_name: str
    lab: str
    vital: str
    other_obs: str
    sud: str
    team: str
    nurse: str  # on the member's CareTeam
    manager: str  # careManager of the other member's EpisodeOfCare
    supervisor: str  # supervisor at the Organization managing the other's EpisodeOfCare
    stranger: str
    organization: str


def _create(system: Bearer, resource: dict[str, Any]) -> str:
    answer = system.post(f"/{resource['resourceType']}", json=resource)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def _observation(tag: str, patient: str, category: str, security: bool = False) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "urn:test", "code": tag}]},
        "subject": {"reference": f"Patient/{patient}"},
    }
    if security:
        resource["meta"] = {"security": [{"system": ACT_CODE, "code": "SUD"}]}
    return resource


@pytest.fixture(scope="module")
def world(smart: Smart) -> World:
    system = smart.system()
    tag = uuid.uuid4().hex[:10]
    other_name = f"Other{tag}"
    member = _create(system, {"resourceType": "Patient", "name": [{"family": f"Member{tag}"}]})
    other = _create(system, {"resourceType": "Patient", "name": [{"family": other_name}]})
    practitioners = [_create(system, {"resourceType": "Practitioner"}) for _ in range(4)]
    nurse, manager, supervisor, stranger = practitioners
    organization = _create(system, {"resourceType": "Organization", "name": f"Org {tag}"})
    _create(
        system,
        {
            "resourceType": "PractitionerRole",
            "practitioner": {"reference": f"Practitioner/{supervisor}"},
            "organization": {"reference": f"Organization/{organization}"},
            "code": [{"coding": [{"system": ROLE, "code": "supervisor"}]}],
        },
    )
    team = _create(
        system,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{member}"},
            "participant": [{"member": {"reference": f"Practitioner/{nurse}"}}],
        },
    )
    _create(
        system,
        {
            "resourceType": "EpisodeOfCare",
            "status": "active",
            "patient": {"reference": f"Patient/{other}"},
            "managingOrganization": {"reference": f"Organization/{organization}"},
            "careManager": {"reference": f"Practitioner/{manager}"},
        },
    )
    lab = _create(system, _observation(tag, member, "laboratory"))
    vital = _create(system, _observation(tag, member, "vital-signs"))
    other_obs = _create(system, _observation(tag, other, "laboratory"))
    sud = _create(system, _observation(tag, member, "social-history", security=True))
    return World(
        tag, member, other, other_name, lab, vital, other_obs, sud, team,
        nurse, manager, supervisor, stranger, organization,
    )  # fmt: skip


def _entry_id(entry: dict[str, Any]) -> str:
    """`Type/id` of a Bundle entry: its resource's, or for a history entry of a delete
    (no resource) its request's URL."""
    if "resource" in entry:
        return f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
    return "/".join(entry["request"]["url"].split("?")[0].split("/")[:2])


def _ids(answer: Any, resource_type: str | None = None) -> set[str]:
    assert answer.status_code == 200, answer.text
    found = {_entry_id(e) for e in answer.json().get("entry", [])}
    return {i for i in found if resource_type is None or i.startswith(f"{resource_type}/")}


def _patient_token(smart: Smart, world: World, scope: str = "patient/*.rs") -> Bearer:
    return smart.as_token(scope, fhir_user=f"Patient/{world.member}", patient=world.member)


def test_patient_scope_reads_own_compartment_only(smart: Smart, world: World) -> None:
    me = _patient_token(smart, world)
    assert me.get(f"/Patient/{world.member}").status_code == 200
    assert me.get(f"/Patient/{world.other}").status_code == 404
    assert me.get(f"/Observation/{world.other_obs}").status_code == 404
    assert me.get(f"/Observation/{world.other_obs}/_history/1").status_code == 404
    assert me.get(f"/Patient?_id={world.member},{world.other}").json()["total"] == 1
    found = _ids(me.get(f"/Observation?code=urn:test|{world.tag}&_total=accurate"))
    # The member always sees their own sensitive resources.
    assert found == {f"Observation/{i}" for i in (world.lab, world.vital, world.sud)}
    assert me.get(f"/Observation?code=urn:test|{world.tag}&_total=accurate").json()["total"] == 3
    # Shared resources (an Organization) are readable; a denied write is 403.
    assert me.get(f"/Organization/{world.organization}").status_code == 200
    write = me.post("/Observation", json=_observation(world.tag, world.member, "laboratory"))
    assert write.status_code == 403


def test_patient_scope_writes_only_in_own_compartment(smart: Smart, world: World) -> None:
    me = _patient_token(smart, world, "patient/Observation.crs")
    mine = me.post("/Observation", json=_observation("write", world.member, "laboratory"))
    assert mine.status_code == 201, mine.text
    theirs = me.post("/Observation", json=_observation("write", world.other, "laboratory"))
    assert theirs.status_code == 403
    assert me.put(
        f"/Observation/{world.other_obs}",
        json={**_observation("x", world.member, "laboratory"), "id": world.other_obs},
    ).status_code in (403, 404)
    system = smart.system()
    assert system.get(f"/Observation/{world.other_obs}").json()["code"]["coding"][0]["code"] == (
        world.tag
    )


def test_no_leak_through_includes_chains_has_history_bundles(smart: Smart, world: World) -> None:
    me = _patient_token(smart, world)
    # _include / _revinclude
    included = _ids(me.get(f"/Observation?code=urn:test|{world.tag}&_include=Observation:subject"))
    assert f"Patient/{world.other}" not in included and f"Patient/{world.member}" in included
    revincluded = _ids(me.get(f"/Patient?_revinclude=Observation:subject&_id={world.member}"))
    assert f"Observation/{world.other_obs}" not in revincluded
    assert f"Observation/{world.lab}" in revincluded
    # a chain through the other member, and _has on the other member's Observation
    chained = me.get(f"/Observation?subject:Patient.name={world.other_name}")
    assert _ids(chained) == set()
    has = me.get(f"/Patient?_has:Observation:subject:code=urn:test|{world.tag}")
    assert _ids(has) == {f"Patient/{world.member}"}
    # history: type and system level
    history = _ids(me.get("/Observation/_history?_count=1000"))
    assert f"Observation/{world.other_obs}" not in history
    assert f"Observation/{world.lab}" in history
    assert f"Patient/{world.other}" not in _ids(me.get("/_history?_count=1000"))
    # batch and transaction entries
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{world.other}"}},
            {"request": {"method": "GET", "url": f"Observation?subject={world.other}"}},
            {"request": {"method": "GET", "url": f"Patient/{world.member}"}},
        ],
    }
    answer = me.post("", json=bundle)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert entries[0]["response"]["status"].startswith("404")
    assert entries[1]["resource"].get("entry", []) == []
    assert entries[2]["response"]["status"].startswith("200")
    writer = _patient_token(smart, world, "patient/*.cruds")
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": _observation("tx", world.member, "laboratory"),
            },
            {
                "request": {"method": "POST", "url": "Observation"},
                "resource": _observation("tx", world.other, "laboratory"),
            },
        ],
    }
    refused = writer.post("", json=transaction)
    assert refused.status_code == 403
    assert _ids(smart.system().get("/Observation?code=urn:test|tx")) == set()


def test_granular_scope_narrows_by_category(smart: Smart, world: World) -> None:
    labs = _patient_token(smart, world, f"patient/Observation.rs?category={CATEGORY}|laboratory")
    found = _ids(labs.get(f"/Observation?code=urn:test|{world.tag}"))
    assert found == {f"Observation/{world.lab}"}
    assert labs.get(f"/Observation/{world.vital}").status_code == 404
    assert labs.get(f"/Patient/{world.member}").status_code == 403


def test_granular_scope_on_a_union_parameter(smart: Smart, world: World) -> None:
    """`combo-code` has no index rows of its own (they are `code`'s and `component-code`'s):
    a scope filtered on it still matches by them."""
    mine = {f"Observation/{i}" for i in (world.lab, world.vital, world.sud)}
    coded = _patient_token(smart, world, f"patient/Observation.rs?combo-code=urn:test|{world.tag}")
    assert _ids(coded.get(f"/Observation?code=urn:test|{world.tag}")) == mine
    assert coded.get(f"/Observation/{world.lab}").status_code == 200
    other = _patient_token(smart, world, "patient/Observation.rs?combo-code=urn:test|none")
    assert _ids(other.get(f"/Observation?code=urn:test|{world.tag}")) == set()
    assert other.get(f"/Observation/{world.lab}").status_code == 404


def test_user_scope_follows_care_team_and_episodes(smart: Smart, world: World) -> None:
    def sees(practitioner: str) -> set[str]:
        token = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{practitioner}")
        return _ids(token.get(f"/Patient?_id={world.member},{world.other}"))

    assert sees(world.nurse) == {f"Patient/{world.member}"}
    assert sees(world.manager) == {f"Patient/{world.other}"}
    assert sees(world.supervisor) == {f"Patient/{world.other}"}
    assert sees(world.stranger) == set()
    nurse = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.nurse}")
    observations = _ids(nurse.get(f"/Observation?code=urn:test|{world.tag}"))
    # The SUD-labelled Observation is hidden without a Consent.
    assert observations == {f"Observation/{world.lab}", f"Observation/{world.vital}"}
    only_observations = smart.as_token(
        "user/Observation.rs", fhir_user=f"Practitioner/{world.nurse}"
    )
    assert only_observations.get(f"/Patient/{world.member}").status_code == 403
    assert only_observations.get(f"/Observation/{world.lab}").status_code == 200


def test_sensitive_resource_shown_with_consent_only(smart: Smart, world: World) -> None:
    nurse = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.nurse}")
    assert nurse.get(f"/Observation/{world.sud}").status_code == 404
    system = smart.system()
    assert system.get(f"/Observation/{world.sud}").status_code == 200  # the sensitive scope
    backend = smart.backend_token(smart.system_client, "system/*.rs")
    plain = smart.bearer(backend.json()["access_token"])
    assert plain.get(f"/Observation/{world.sud}").status_code == 404
    consent = _create(
        system,
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{world.member}"},
            "policyRule": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
                ]
            },
            "provision": {
                "type": "permit",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "IRCP",
                                }
                            ]
                        },
                        "reference": {"reference": f"CareTeam/{world.team}"},
                    }
                ],
                "securityLabel": [{"system": ACT_CODE, "code": "SUD"}],
            },
        },
    )
    assert nurse.get(f"/Observation/{world.sud}").status_code == 200
    found = _ids(nurse.get(f"/Observation?code=urn:test|{world.tag}"))
    assert f"Observation/{world.sud}" in found
    assert system.delete(f"/Consent/{consent}").status_code in (200, 204)
    assert nurse.get(f"/Observation/{world.sud}").status_code == 404


def test_care_team_membership_granted_then_revoked(smart: Smart, world: World) -> None:
    system = smart.system()
    stranger = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.stranger}")
    assert stranger.get(f"/Patient/{world.member}").status_code == 404
    team = system.get(f"/CareTeam/{world.team}").json()
    team["participant"].append({"member": {"reference": f"Practitioner/{world.stranger}"}})
    assert system.put(f"/CareTeam/{world.team}", json=team).status_code == 200
    assert stranger.get(f"/Patient/{world.member}").status_code == 200  # the next request
    team["status"] = "inactive"
    assert system.put(f"/CareTeam/{world.team}", json=team).status_code == 200
    assert stranger.get(f"/Patient/{world.member}").status_code == 404
    nurse = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.nurse}")
    assert nurse.get(f"/Patient/{world.member}").status_code == 404
    team["status"] = "active"
    team["participant"] = team["participant"][:1]
    assert system.put(f"/CareTeam/{world.team}", json=team).status_code == 200
    assert nurse.get(f"/Patient/{world.member}").status_code == 200


def _audit_events(reader: Bearer, member: str, wanted: int) -> list[dict[str, Any]]:
    """The member's AuditEvents, once at least `wanted` are written (the trail is written
    from its buffer every 0.2 s in these tests)."""
    deadline = time.monotonic() + 15
    while True:
        answer = reader.get(f"/AuditEvent?patient={member}&_count=1000")
        assert answer.status_code == 200, answer.text
        events = [e["resource"] for e in answer.json().get("entry", [])]
        if len(events) >= wanted or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def test_audit_trail_readable_by_the_member(smart: Smart, world: World) -> None:
    system = smart.system()
    member = _create(system, {"resourceType": "Patient", "name": [{"family": "Audited"}]})
    other = _create(system, {"resourceType": "Patient", "name": [{"family": "Unaudited"}]})
    _create(
        system,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{member}"},
            "participant": [{"member": {"reference": f"Practitioner/{world.nurse}"}}],
        },
    )
    observation = _create(system, _observation("audited", member, "laboratory"))
    nurse = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.nurse}")
    assert nurse.get(f"/Observation/{observation}").status_code == 200
    assert _ids(nurse.get(f"/Observation?subject=Patient/{member}")) == {
        f"Observation/{observation}"
    }
    narrow = smart.as_token("user/Observation.rs", fhir_user=f"Practitioner/{world.nurse}")
    assert narrow.get(f"/Patient/{member}").status_code == 403
    me = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    events = _audit_events(me, member, 6)
    by_nurse = [
        e for e in events if e["agent"][0]["who"].get("reference") == f"Practitioner/{world.nurse}"
    ]
    actions = {(e["subtype"][0]["code"], e["outcome"]) for e in by_nurse}
    # The read, the search and the refused read, each with who and its outcome.
    assert {("read", "0"), ("search-type", "0"), ("read", "4")} <= actions
    read = next(e for e in by_nurse if e["subtype"][0]["code"] == "read" and e["outcome"] == "0")
    assert {"reference": f"Observation/{observation}"} in [x["what"] for x in read["entity"]]
    assert read["agent"][0]["network"]["address"] == "127.0.0.1"
    assert read["agent"][1]["who"]["identifier"]["value"] == "test-app"
    # The system client's creates are in the trail too; and another member's are not shown.
    assert any(e["action"] == "C" for e in events)
    assert _audit_events(me, other, 0) == []
    assert _ids(me.get(f"/AuditEvent?patient={other}")) == set()


def test_x_provenance_is_recorded_with_the_write(smart: Smart, world: World) -> None:
    system = smart.system()
    provenance = {
        "resourceType": "Provenance",
        "recorded": "2026-11-30T12:00:00Z",
        "agent": [{"who": {"reference": f"Practitioner/{world.nurse}"}}],
        "activity": {"text": "entered from the paper chart"},
    }
    bad = system.post(
        "/Observation",
        json=_observation("provenance", world.member, "laboratory"),
        headers={"X-Provenance": '{"resourceType": "Provenance", "agent": "nobody"}'},
    )
    assert bad.status_code == 400
    assert _ids(system.get("/Observation?code=urn:test|provenance")) == set()
    written = system.post(
        "/Observation",
        json=_observation("provenance", world.member, "laboratory"),
        headers={"X-Provenance": json.dumps(provenance)},
    )
    assert written.status_code == 201, written.text
    target = written.headers["location"].split("/fhir/", 1)[1]
    deadline = time.monotonic() + 15
    while True:
        found = system.get(f"/Provenance?target={target.split('/_history')[0]}")
        entries = found.json().get("entry", [])
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert len(entries) == 1
    stored = entries[0]["resource"]
    assert stored["target"] == [{"reference": target}]
    assert stored["activity"] == {"text": "entered from the paper chart"}


def test_history_of_a_deleted_resource_shows_its_deletion(smart: Smart, world: World) -> None:
    system = smart.system()
    gone = _create(system, _observation("deleted", world.member, "laboratory"))
    assert system.delete(f"/Observation/{gone}").status_code in (200, 204)
    nurse = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.nurse}")
    history = nurse.get(f"/Observation/{gone}/_history")
    assert history.status_code == 200, history.text
    methods = [e["request"]["method"] for e in history.json()["entry"]]
    assert methods == ["DELETE", "POST"]
    stranger = smart.as_token("user/*.rs", fhir_user=f"Practitioner/{world.stranger}")
    assert stranger.get(f"/Observation/{gone}/_history").status_code == 404
