"""AuditEvents in their own table (store/audit_events.py) over HTTP: read, vread, search by
the AuditEvent parameters with modifiers, prefixes, sort, paging and totals, the Patient
compartment, history, the member's own view; and the clear 4xx for what is not offered on
them (client writes, chains, `_has`, `_include`/`_revinclude`, other sorts)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from tests.auth.conftest import Bearer, Smart

from cmfhir.interactions.audit_rows import GROUPED


def _entries(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def _ids(answer: httpx.Response) -> set[str]:
    return {r["id"] for r in _entries(answer)}


def _refused(answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert words in body["issue"][0]["diagnostics"], body


def _events_of(system: Bearer, site: str, wanted: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        found = _entries(system.get(f"/AuditEvent?site={site}"))
        if len(found) >= wanted or time.monotonic() > deadline:
            assert len(found) == wanted, found
            return found
        time.sleep(0.2)


def test_audit_events_are_read_searched_and_listed(smart: Smart) -> None:
    system = smart.system()
    member = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    other = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    site = uuid.uuid4().hex
    for n in range(3):
        answer = system.get(f"/Patient/{member}", headers={"X-Request-Id": f"{site}{n}"})
        assert answer.status_code == 200
    assert system.get(f"/Patient/{other}", headers={"X-Request-Id": site}).status_code == 200
    (event,) = _events_of(system, site, 1)
    mine = [_events_of(system, f"{site}{n}", 1)[0] for n in range(3)]
    first = mine[0]

    # read and vread: the stored event, its one version.
    read = system.get(f"/AuditEvent/{first['id']}")
    assert read.status_code == 200 and read.json() == first
    assert read.headers["ETag"] == 'W/"1"'
    assert system.get(f"/AuditEvent/{first['id']}/_history/1").json() == first
    assert system.get(f"/AuditEvent/{first['id']}/_history/2").status_code == 404
    assert system.get(f"/AuditEvent/{uuid.uuid4()}").status_code == 404

    # search: references, tokens with :not, dates with prefixes, strings, _id, sort, paging.
    ids = {e["id"] for e in mine}
    assert ids <= _ids(system.get(f"/AuditEvent?patient={member}&_count=1000"))
    assert event["id"] not in _ids(system.get(f"/AuditEvent?patient=Patient/{member}"))
    by_entity = f"/AuditEvent?entity=Patient/{member}&subtype=read&action=R&outcome=0"
    assert ids <= _ids(system.get(by_entity + "&date=ge2020-01-01&address=127.0"))
    assert not ids & _ids(system.get(by_entity + "&date=lt2020-01-01"))
    assert _ids(system.get(f"/AuditEvent?site={site}0&subtype:not=read")) == set()
    assert _ids(system.get(f"/AuditEvent?_id={first['id']}&altid:missing=true")) == {first["id"]}
    assert _ids(system.get(f"/AuditEvent?_id={first['id']}&site:missing=true")) == set()
    sorted_page = system.get(
        f"/AuditEvent?entity=Patient/{member}&subtype=read&_sort=-date&_count=2&_total=accurate"
    ).json()
    assert sorted_page["total"] >= 3 and len(sorted_page["entry"]) == 2
    dates = [e["resource"]["recorded"] for e in sorted_page["entry"]]
    assert dates == sorted(dates, reverse=True)
    following = next(x["url"] for x in sorted_page["link"] if x["relation"] == "next")
    rest = system.get(following).json()
    assert not {e["resource"]["id"] for e in rest["entry"]} & {
        e["resource"]["id"] for e in sorted_page["entry"]
    }
    assert ids <= _ids(system.get(f"/Patient/{member}/AuditEvent?_count=1000"))

    # Another resource may name an AuditEvent (and not one that does not exist).
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Patient/{member}"}],
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"who": {"display": "auditor"}}],
        "entity": [{"role": "source", "what": {"reference": f"AuditEvent/{first['id']}"}}],
    }
    assert system.post("/Provenance", json=provenance).status_code == 201
    provenance["entity"][0]["what"] = {"reference": f"AuditEvent/{uuid.uuid4()}"}
    assert system.post("/Provenance", json=provenance).status_code in (400, 409, 422)

    # history: an event's one version; the type's, newest first, paged.
    assert _ids(system.get(f"/AuditEvent/{first['id']}/_history")) == {first["id"]}
    page = system.get("/AuditEvent/_history?_count=2").json()
    assert page["type"] == "history" and len(page["entry"]) == 2
    assert any(x["relation"] == "next" for x in page["link"])

    # The member sees the events about them, never another's.
    me = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
    assert ids <= _ids(me.get(f"/AuditEvent?patient={member}&_count=1000"))
    assert me.get(f"/AuditEvent/{first['id']}").status_code == 200
    assert me.get(f"/AuditEvent/{event['id']}").status_code == 404
    assert _ids(me.get(f"/AuditEvent?site={site}")) == set()


def _walk(client: Bearer, path: str) -> list[str]:
    """The ids of every page of a search or history, following `next`."""
    out: list[str] = []
    url: str | None = path
    while url is not None:
        page = client.get(url)
        out += [r["id"] for r in _entries(page)]
        url = next((x["url"] for x in page.json()["link"] if x["relation"] == "next"), None)
    return out


def test_a_search_about_several_members_gives_each_their_own_event(smart: Smart) -> None:
    """A search's page of several members is one event per member, each naming its member
    alone (stored as one row, store/audit_events.py): found by that member's `patient`,
    read, referenced, listed in history and paged one at a time like any other event."""
    system = smart.system()
    site = uuid.uuid4().hex
    family = f"Fam{site[:12]}"
    members = [
        system.post(
            "/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}
        ).json()["id"]
        for _ in range(3)
    ]
    before = system.get("/AuditEvent/_history?_count=1").json()["meta"]["lastUpdated"]
    time.sleep(0.01)
    answer = system.get(f"/Patient?family={family}", headers={"X-Request-Id": site})
    assert sorted(r["id"] for r in _entries(answer)) == sorted(members)
    found = _events_of(system, site, 3)
    about = {}
    for event in found:
        named = [e for e in event["entity"] if e.get("type", {}).get("code") == "1"]
        assert len(named) == 1, event  # its member, no other
        about[named[0]["what"]["reference"].removeprefix("Patient/")] = event
        assert "query" in event["entity"][-1]
    assert sorted(about) == sorted(members)
    ids = [e["id"] for e in found]
    assert len(set(ids)) == 3

    for member, event in about.items():
        assert _ids(system.get(f"/AuditEvent?patient={member}&site={site}")) == {event["id"]}
        assert _ids(system.get(f"/AuditEvent?entity=Patient/{member}&site={site}")) == {event["id"]}
        assert system.get(f"/AuditEvent/{event['id']}").json() == event
        assert system.get(f"/AuditEvent/{event['id']}/_history/1").json() == event
        assert _ids(system.get(f"/AuditEvent/{event['id']}/_history")) == {event["id"]}
        assert _ids(system.get(f"/AuditEvent?_id={event['id']}")) == {event["id"]}
        # The member sees their own event, not the others' of the same search.
        me = smart.as_token("patient/*.rs", fhir_user=f"Patient/{member}", patient=member)
        assert _ids(me.get(f"/AuditEvent?site={site}")) == {event["id"]}
        for other in set(ids) - {event["id"]}:
            assert me.get(f"/AuditEvent/{other}").status_code == 404
    row = ids[0].rpartition(".")[0]
    assert system.get(f"/AuditEvent/{row}").status_code == 404
    # A row holds at most GROUPED events (others of this client may share it).
    assert system.get(f"/AuditEvent/{row}.{GROUPED + 1}").status_code == 404
    assert system.get(f"/AuditEvent/{row}.01").status_code == 404

    # Paged one event at a time: each once, in order, whether sorted or not.
    assert sorted(_walk(system, f"/AuditEvent?site={site}&_count=1")) == sorted(ids)
    newest = _walk(system, f"/AuditEvent?site={site}&_sort=-date&_count=1")
    assert sorted(newest) == sorted(ids) and len(newest) == 3
    listed = _walk(system, f"/AuditEvent/_history?_since={before}&_count=1")
    assert [i for i in listed if i in ids] == sorted(ids, key=lambda i: -int(i.split(".")[1]))

    # Another resource may name one of them, not a place the row does not have.
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Patient/{members[0]}"}],
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"who": {"display": "auditor"}}],
        "entity": [{"role": "source", "what": {"reference": f"AuditEvent/{ids[1]}"}}],
    }
    assert system.post("/Provenance", json=provenance).status_code == 201
    provenance["entity"][0]["what"] = {"reference": f"AuditEvent/{row}.{GROUPED + 1}"}
    assert system.post("/Provenance", json=provenance).status_code in (400, 409, 422)


def test_what_audit_events_do_not_offer_is_refused(smart: Smart) -> None:
    system = smart.system()
    member = system.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    event = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "elsewhere"}},
    }
    _refused(system.post("/AuditEvent", json=event), 405, "recorded by the server")
    _refused(system.put("/AuditEvent/x1", json={**event, "id": "x1"}), 405, "recorded by")
    _refused(system.get("/AuditEvent?entity:Patient.name=x"), 400, "entity")
    _refused(system.get(f"/Patient?_has:AuditEvent:patient:action=R&_id={member}"), 400, "_has")
    _refused(system.get("/Patient?_revinclude=AuditEvent:patient"), 400, "not included")
    _refused(system.get("/AuditEvent?_include=AuditEvent:agent"), 400, "_include")
    _refused(system.get("/AuditEvent?_sort=action"), 400, "sorted by date")
    _refused(system.get("?_type=AuditEvent"), 400, "not in a search of all types")
    async_export = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
    exported = system.get("/Patient/$export?_type=AuditEvent", headers=async_export)
    _refused(exported, 400, "not exported in bulk")
    _refused(system.get(f"/Patient/{member}/$everything?_type=AuditEvent"), 400, "$everything")
    statement = system.get("/metadata").json()
    (entry,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent"]
    assert {i["code"] for i in entry["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "history-type",
        "search-type",
    }
