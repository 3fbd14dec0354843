"""Following the server with `_history?_since=T` (https://hl7.org/fhir/R4B/http.html#history):
a client that sends the last answer's `meta.lastUpdated` as its next `_since` sees every
version exactly once, even beside transactions that take longer than its poll interval."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import httpx

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.create import create_in

FHIR = {"Content-Type": "application/fhir+json"}
Key = tuple[str, str, str]  # type, id, versionId


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _patient(tag: str, n: int = 0) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": "urn:test:follow", "code": tag}]},
        "name": [{"family": f"Follow{n}"}],
    }


async def _page(http: httpx.AsyncClient, url: str, params: dict[str, str] | None) -> Any:
    response = await http.get(url, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def _poll(http: httpx.AsyncClient, since: str) -> tuple[list[Key], str]:
    """One poll of the system history from `since`, every page; the versions and the
    `_since` to send next."""
    bundle = await _page(http, "_history", {"_since": since, "_count": "500"})
    following = bundle["meta"]["lastUpdated"]
    keys: list[Key] = []
    while True:
        for entry in bundle.get("entry", []):
            type_, id = entry["fullUrl"].rsplit("/", 2)[-2:]
            keys.append((type_, id, entry["response"]["etag"][3:-1]))
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
        if url is None:
            return keys, following
        bundle = await _page(http, url, None)
        assert bundle["meta"]["lastUpdated"] == following  # one answer across its pages


async def _start(http: httpx.AsyncClient) -> str:
    return str((await _page(http, "_history", {"_count": "1"}))["meta"]["lastUpdated"])


async def _held_create(
    ctx: FhirContext,
    tag: str,
    hold: float,
    commit: bool = True,
    written: asyncio.Event | None = None,
) -> Key:
    """Create a Patient in a transaction that stays open `hold` seconds after writing (and
    is rolled back when not `commit`); `written` is set once it has written."""

    class Abandon(Exception):
        pass

    try:
        async with ctx.store.transaction(principal=TRUSTED) as repo:
            record, _ = await create_in(ctx, repo, _patient(tag))
            if written is not None:
                written.set()
            await asyncio.sleep(hold)
            if not commit:
                raise Abandon
    except Abandon:
        pass
    return ("Patient", record.id, str(record.version))


async def test_a_transaction_held_open_is_not_skipped(base: str, settings: Settings) -> None:
    tag = uuid.uuid4().hex
    async with (
        open_context(settings) as ctx,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        since = await _start(http)
        # Held longer than a `_since` answer waits for running writes (2 s).
        written = asyncio.Event()
        held = asyncio.create_task(_held_create(ctx, tag, hold=4.0, written=written))
        await written.wait()  # written (stamped), not committed
        quick = (await http.post("Patient", json=_patient(tag), headers=FHIR)).json()
        first, since_next = await _poll(http, since)
        # The quick one committed after the held one was stamped: it waits with it.
        assert ("Patient", quick["id"], "1") not in first
        assert _instant(since_next) <= _instant(quick["meta"]["lastUpdated"])
        held_key = await held
        second, _ = await _poll(http, since_next)
    assert held_key in second
    assert ("Patient", quick["id"], "1") in second
    assert not set(first) & set(second)


def _bundle(tag: str, size: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _patient(tag, n), "request": {"method": "POST", "url": "Patient"}}
            for n in range(size)
        ],
    }


async def test_follower_sees_every_version_once_beside_long_transactions(
    base: str, settings: Settings
) -> None:
    tag = uuid.uuid4().hex
    rng = random.Random(8)
    written: list[Key] = []
    async with (
        open_context(settings) as ctx,
        httpx.AsyncClient(base_url=base, timeout=120) as http,
    ):
        start = since = await _start(http)
        seen: list[Key] = []
        done = asyncio.Event()

        async def follower() -> None:
            nonlocal since
            while not done.is_set():
                keys, since = await _poll(http, since)
                seen.extend(keys)
                await asyncio.sleep(0.05)

        async def big(size: int) -> None:
            answer = await http.post("", json=_bundle(tag, size), headers=FHIR)
            assert answer.status_code == 200, answer.text
            for entry in answer.json()["entry"]:
                type_, id, _, version = entry["response"]["location"].split("/")
                written.append((type_, id, version))

        async def small(count: int) -> None:
            for n in range(count):
                created = await http.post("Patient", json=_patient(tag, n), headers=FHIR)
                body = created.json()
                written.append(("Patient", body["id"], "1"))
                body["active"] = True
                updated = await http.put(f"Patient/{body['id']}", json=body, headers=FHIR)
                written.append(("Patient", body["id"], updated.json()["meta"]["versionId"]))
                await asyncio.sleep(rng.uniform(0, 0.05))

        async def held(hold: float, commit: bool) -> None:
            key = await _held_create(ctx, tag, hold, commit)
            if commit:
                written.append(key)

        polling = asyncio.create_task(follower())
        await asyncio.gather(
            big(1500),
            big(800),
            small(25),
            small(25),
            *(held(rng.uniform(0.2, 2.0), commit=n != 2) for n in range(5)),
        )
        done.set()
        await polling
        last, _ = await _poll(http, since)  # nothing is in flight any more
        seen.extend(last)
        # Everything since the start, in one answer, is what the follower pieced together.
        everything, _ = await _poll(http, start)
    counts = Counter(seen)
    assert [key for key, n in counts.items() if n > 1] == []
    assert set(written) <= set(seen)
    assert set(seen) == set(everything)
    assert len(everything) == len(set(everything))


async def test_history_without_since_shows_own_write_beside_a_held_transaction(
    base: str, settings: Settings
) -> None:
    """A type history read without `_since` is not a follow: the client's own write is on
    its first page even while an older write transaction is still open; the Bundle still
    states the watermark (before that write) as where a follower goes on from."""
    tag = uuid.uuid4().hex
    async with (
        open_context(settings) as ctx,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        written = asyncio.Event()
        held = asyncio.create_task(_held_create(ctx, tag, hold=1.5, written=written))
        await written.wait()  # written (stamped), not committed
        quick = (await http.post("Patient", json=_patient(tag), headers=FHIR)).json()
        bundle = await _page(http, "Patient/_history", {"_count": "1"})
        await held
    assert bundle["entry"][0]["resource"]["id"] == quick["id"]
    assert _instant(bundle["meta"]["lastUpdated"]) <= _instant(quick["meta"]["lastUpdated"])


async def test_a_follow_waits_for_a_short_running_write_and_holds_the_clients_own(
    base: str, settings: Settings
) -> None:
    """A `_since` answer asked while a short write transaction (a background worker's, say)
    runs waits for it to end, so it holds the client's own write made just before, and the
    short one's too."""
    tag = uuid.uuid4().hex
    async with (
        open_context(settings) as ctx,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        since = await _start(http)
        written = asyncio.Event()
        held = asyncio.create_task(_held_create(ctx, tag, hold=0.8, written=written))
        await written.wait()  # written (stamped), not committed
        quick = (await http.post("Patient", json=_patient(tag), headers=FHIR)).json()
        seen, _ = await _poll(http, since)
        held_key = await held
    assert ("Patient", quick["id"], "1") in seen
    assert held_key in seen
