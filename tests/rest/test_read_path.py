"""The read path (routes/read_path.py) answers `GET Type/id`, `GET Type/id/_history/vid` and
`GET Type?...` in front of the middleware stack: every answer — status, headers, body, the
audit record — must be the one the whole stack gives. Each request is sent twice to one
application: once as a server calls it, once straight to its middleware stack (what the read
path sends on)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from cmfhir.app import create_app
from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings
from cmfhir.routes.read_path import READ_PATH, SEARCH_PATH, ReadPath

FHIR = {"Content-Type": "application/fhir+json"}
BASE = "http://reads"
R4B = "application/fhir+json; fhirVersion=4.3"


class Recorder:
    """Stands in for the audit trail's buffer: the records the requests made, in order."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def record(self, record: Any) -> None:
        self.records.append(record)


@asynccontextmanager
async def _clients(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient, Any]]:
    """The application served, a client through the read path and one around it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        recorder = Recorder()
        app.state.audit = recorder
        fast = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        slow = httpx.AsyncClient(transport=httpx.ASGITransport(app=_stack(app)), base_url=BASE)
        async with fast, slow:
            yield (app, fast, slow), recorder


def _stack(app: Any) -> Any:
    """The application's middleware stack without the read path in front of it."""

    async def stack(scope: Any, receive: Any, send: Any) -> None:
        path = app.middleware_stack
        assert isinstance(path, ReadPath)
        scope["app"] = app
        await path.app(scope, receive, send)

    return stack


def _seen(answer: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in answer.headers.multi_items() if k != "x-request-id")
    return answer.status_code, headers, answer.content


async def _compare(
    fast: httpx.AsyncClient,
    slow: httpx.AsyncClient,
    recorder: Recorder,
    cases: list[tuple[str, str, dict[str, str]]],
) -> None:
    for n, (name, url, headers) in enumerate(cases):
        sent = {"X-Request-Id": f"case-{n}", **headers}
        recorder.records.clear()
        one = await fast.get(url, headers=sent)
        two = await slow.get(url, headers=sent)
        assert _seen(one) == _seen(two), name
        assert one.headers.get("x-request-id") == two.headers.get("x-request-id"), name
        assert len(recorder.records) in (0, 2), name
        if recorder.records:
            assert recorder.records[0] == recorder.records[1], name


def _big_patient(id: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": id,
        "identifier": [{"system": "urn:x", "value": f"v-{n}"} for n in range(300)],
    }


async def test_answers_as_the_stack_does(database_url: str) -> None:
    settings = Settings(database_url=database_url, workers=False, audit=False)
    async with _clients(settings) as ((app, fast, slow), recorder):
        tag = uuid.uuid4().hex[:8]
        one, big, gone = f"rp-{tag}", f"rp-big-{tag}", f"rp-gone-{tag}"
        for body in ({"resourceType": "Patient", "id": one, "active": True}, _big_patient(big)):
            answer = await fast.put(f"/fhir/Patient/{body['id']}", json=body, headers=FHIR)
            assert answer.status_code in (200, 201), answer.text
        changed = {"resourceType": "Patient", "id": one, "active": False}
        updated = await fast.put(f"/fhir/Patient/{one}", json=changed, headers=FHIR)
        assert updated.status_code == 200
        made = await fast.put(
            f"/fhir/Patient/{gone}", json={"resourceType": "Patient", "id": gone}, headers=FHIR
        )
        assert made.status_code == 201, made.text
        assert (await fast.delete(f"/fhir/Patient/{gone}")).status_code in (200, 204)
        modified = updated.headers["last-modified"]
        taken_before = path_served(app)
        cases: list[tuple[str, str, dict[str, str]]] = [
            ("read", f"/fhir/Patient/{one}", {}),
            (
                "read R4B",
                f"/fhir/Patient/{one}",
                {"Accept": "application/fhir+json; fhirVersion=4.3"},
            ),
            ("read _format", f"/fhir/Patient/{one}?_format=json", {}),
            ("read plain json", f"/fhir/Patient/{one}", {"Accept": "application/json"}),
            ("read _summary", f"/fhir/Patient/{one}?_summary=true", {}),
            ("read _elements", f"/fhir/Patient/{one}?_elements=active", {}),
            ("read bad _summary", f"/fhir/Patient/{one}?_summary=nope", {}),
            ("read _pretty", f"/fhir/Patient/{one}?_pretty=true", {}),
            ("read xml", f"/fhir/Patient/{one}", {"Accept": "application/fhir+xml"}),
            ("read _format xml", f"/fhir/Patient/{one}?_format=xml", {}),
            ("read etag match", f"/fhir/Patient/{one}", {"If-None-Match": 'W/"2"'}),
            ("read etag other", f"/fhir/Patient/{one}", {"If-None-Match": 'W/"1"'}),
            ("read modified since", f"/fhir/Patient/{one}", {"If-Modified-Since": modified}),
            ("read bad since", f"/fhir/Patient/{one}", {"If-Modified-Since": "yesterday"}),
            ("read missing", f"/fhir/Patient/no-{tag}", {}),
            ("read unknown type", f"/fhir/Nonesuch/{one}", {}),
            ("read type not in R4", f"/fhir/SubscriptionTopic/{one}", {}),
            ("read deleted", f"/fhir/Patient/{gone}", {}),
            ("read big", f"/fhir/Patient/{big}", {"Accept-Encoding": "identity"}),
            ("read big gzip", f"/fhir/Patient/{big}", {"Accept-Encoding": "gzip"}),
            ("read small gzip", f"/fhir/Patient/{one}", {"Accept-Encoding": "gzip, deflate"}),
            ("vread 1", f"/fhir/Patient/{one}/_history/1", {}),
            ("vread 2 etag", f"/fhir/Patient/{one}/_history/2", {"If-None-Match": 'W/"2"'}),
            ("vread missing", f"/fhir/Patient/{one}/_history/9", {}),
            ("vread not a number", f"/fhir/Patient/{one}/_history/x", {}),
            ("vread deleted", f"/fhir/Patient/{gone}/_history/2", {}),
            ("vread before delete", f"/fhir/Patient/{gone}/_history/1", {}),
            ("vread _elements", f"/fhir/Patient/{one}/_history/1?_elements=active", {}),
            ("search", f"/fhir/Patient?_id={one},{big}", {}),
            ("search all", "/fhir/Patient", {}),
            ("search R4B", f"/fhir/Patient?_id={one}", {"Accept": R4B}),
            ("search _format", f"/fhir/Patient?_id={one}&_format=json", {}),
            ("search _pretty", f"/fhir/Patient?_id={one}&_pretty=true", {}),
            ("search _summary", f"/fhir/Patient?_id={one}&_summary=count", {}),
            ("search _elements", f"/fhir/Patient?_id={one}&_elements=active", {}),
            ("search _count paged", f"/fhir/Patient?_id={one},{big}&_count=1", {}),
            ("search _revinclude", f"/fhir/Patient?_id={one}&_revinclude=Observation:subject", {}),
            ("search unknown parameter", "/fhir/Patient?nonesuch=1", {}),
            ("search lenient", "/fhir/Patient?nonesuch=1", {"Prefer": "handling=lenient"}),
            ("search bad value", "/fhir/Patient?birthdate=notadate", {}),
            ("search unknown type", "/fhir/Nonesuch?_id=1", {}),
            ("search type not in R4", "/fhir/SubscriptionTopic", {}),
            ("search utf-8", "/fhir/Patient?name=M%C3%BCller", {}),
            ("search xml", f"/fhir/Patient?_id={one}", {"Accept": "application/fhir+xml"}),
            ("search big gzip", f"/fhir/Patient?_id={big}", {"Accept-Encoding": "gzip"}),
            ("search big", f"/fhir/Patient?_id={big}", {"Accept-Encoding": "identity"}),
        ]
        await _compare(fast, slow, recorder, cases)
        # Every case but the three refused in negotiation (406) took the read path.
        assert path_served(app) - taken_before == len(cases) - 3
        searched = (await fast.get(f"/fhir/Patient?_id={one}&_count=1")).json()
        assert [e["resource"]["id"] for e in searched["entry"]] == [one]
        assert searched["link"][0]["url"] == f"{BASE}/fhir/Patient?_id={one}&_count=1"
        compressed = await fast.get(f"/fhir/Patient/{big}", headers={"Accept-Encoding": "gzip"})
        assert compressed.headers["content-encoding"] == "gzip"
        assert compressed.headers["vary"] == "Accept-Encoding"
        # A vread is one statement on the read pool (store/reader.py), as a read is.
        reader = app.state.fhir.store.reader
        before = reader.reads
        assert (await fast.get(f"/fhir/Patient/{one}/_history/1")).status_code == 200
        assert reader.reads == before + 1
        small = await fast.get(f"/fhir/Patient/{one}", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in small.headers and "vary" not in small.headers
        assert small.json()["id"] == one


async def test_audit_records_as_the_stack_does(database_url: str) -> None:
    settings = Settings(database_url=database_url, workers=False, audit=False)
    async with _clients(settings) as ((_, fast, slow), recorder):
        tag = uuid.uuid4().hex[:8]
        body = {
            "resourceType": "Observation",
            "id": f"rp-obs-{tag}",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/rp-member-{tag}"},
        }
        await fast.put(
            f"/fhir/Patient/rp-member-{tag}",
            json={"resourceType": "Patient", "id": f"rp-member-{tag}"},
            headers=FHIR,
        )
        assert (
            await fast.put(f"/fhir/Observation/{body['id']}", json=body, headers=FHIR)
        ).is_success
        cases = [
            ("audited read", f"/fhir/Observation/{body['id']}", {}),
            ("audited vread", f"/fhir/Observation/{body['id']}/_history/1", {}),
            ("audited missing", f"/fhir/Observation/no-{tag}", {}),
            ("audited search", f"/fhir/Observation?subject=Patient/rp-member-{tag}", {}),
            ("audited refused search", "/fhir/Observation?nonesuch=1", {}),
        ]
        await _compare(fast, slow, recorder, cases)
        recorder.records.clear()
        await fast.get(f"/fhir/Observation/{body['id']}")
        (record,) = recorder.records
        assert record.members == (f"rp-member-{tag}",)
        assert record.interaction == "read" and record.status == 200
        recorder.records.clear()
        await fast.get(f"/fhir/Observation?subject=Patient/rp-member-{tag}")
        (record,) = recorder.records
        assert record.members == (f"rp-member-{tag}",)
        assert record.interaction == "search-type" and record.status == 200
        assert record.query == f"Observation?subject=Patient/rp-member-{tag}"


async def test_tokens_and_scopes_as_the_stack_does(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_url,
        workers=False,
        audit=False,
        auth="smart",
        data_dir=tmp_path,
    )
    async with _clients(settings) as ((_, fast, slow), recorder):
        keys = SigningKeys(tmp_path / "auth-keys")

        def bearer(scope: str) -> dict[str, str]:
            issued = issue_access_token(
                keys,
                issuer=f"{BASE}/auth",
                audience=f"{BASE}/fhir",
                client_id="reads",
                scope=scope,
                lifetime=600,
            )
            return {"Authorization": f"Bearer {issued.token}"}

        tag = uuid.uuid4().hex[:8]
        system = bearer("system/*.cruds")
        made = await fast.put(
            f"/fhir/Patient/rp-auth-{tag}",
            json={"resourceType": "Patient", "id": f"rp-auth-{tag}"},
            headers={**FHIR, **system},
        )
        assert made.status_code == 201, made.text
        cases = [
            ("no token", f"/fhir/Patient/rp-auth-{tag}", {}),
            ("not a bearer", f"/fhir/Patient/rp-auth-{tag}", {"Authorization": "Basic eA=="}),
            ("bad token", f"/fhir/Patient/rp-auth-{tag}", {"Authorization": "Bearer x.y.z"}),
            ("read", f"/fhir/Patient/rp-auth-{tag}", system),
            ("vread", f"/fhir/Patient/rp-auth-{tag}/_history/1", system),
            ("other type only", f"/fhir/Patient/rp-auth-{tag}", bearer("system/Observation.rs")),
            ("search only", f"/fhir/Patient/rp-auth-{tag}", bearer("system/Patient.s")),
            ("search", f"/fhir/Patient?_id=rp-auth-{tag}", system),
            ("search no token", f"/fhir/Patient?_id=rp-auth-{tag}", {}),
            ("search read only", f"/fhir/Patient?_id=rp-auth-{tag}", bearer("system/Patient.r")),
            ("search other type", f"/fhir/Patient?_id=rp-auth-{tag}", bearer("system/Group.s")),
        ]
        await _compare(fast, slow, recorder, cases)
        assert (await fast.get(f"/fhir/Patient/rp-auth-{tag}")).status_code == 401
        refused = await fast.get(
            f"/fhir/Patient/rp-auth-{tag}", headers=bearer("system/Observation.rs")
        )
        assert refused.status_code == 403


def path_served(app: Any) -> int:
    path = app.middleware_stack
    assert isinstance(path, ReadPath)
    return path.served


def test_read_path_takes_only_reads_vreads_and_searches() -> None:
    for path in ("/fhir/Patient/1", "/fhir/Patient/a-1.B/_history/2"):
        assert READ_PATH.fullmatch(path), path
    assert SEARCH_PATH.fullmatch("/fhir/Patient")
    for path in ("/fhir/metadata", "/fhir/_history", "/fhir/Patient/", "/fhir/", "/fhir"):
        assert not SEARCH_PATH.fullmatch(path), path
    for path in (
        "/fhir/Patient",
        "/fhir/Patient/1/_history",
        "/fhir/Patient/1/$everything",
        "/fhir/Patient/$export",
        "/fhir/patient/1",
        "/fhir/Patient/1/Observation",
        "/fhir/Patient/1/_history/2/x",
        "/fhir/metadata",
    ):
        assert not READ_PATH.fullmatch(path), path
