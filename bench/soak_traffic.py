"""The soak scenario's request mix against an already loaded caseload: reads, searches (the
care-manager questions of the search scenario), creates and updates of vital-sign
Observations, and follow-up visits as transaction Bundles, paced to a bounded total rate."""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from datetime import date, timedelta
from typing import Any, NamedTuple

import httpx
import orjson

from bench.caseload import AS_OF, Staff, visit_bundle, vital_sign
from bench.headers import client_headers
from bench.queries import QUERIES, Args, Query

__all__ = ["MIX", "Record", "Traffic"]

Sent = tuple[bool, str]  # success, and the detail recorded with it

# Share of requests per kind (weights): a care-management day is mostly reads and searches.
MIX: tuple[tuple[str, int], ...] = (
    ("read", 45),
    ("search", 30),
    ("create", 8),
    ("update", 9),
    ("transaction", 8),
)
_KEEP_CREATED = 500  # the most recent created Observations, targets of updates and reads
_MAX_FAILURES_KEPT = 10


class Record(NamedTuple):
    done_s: float  # completion, seconds since the soak started
    latency_s: float
    kind: str
    ok: bool
    detail: str  # the search question, or the resource type read


class Traffic:
    """Paced requests from `clients` async httpx clients (one keep-alive connection each).

    Request slots are `1 / rate` apart and shared by the clients; a client that is late
    takes the next free slot instead of catching up, so the rate never exceeds `rate` and
    drops (rather than queueing) if the server slows down."""

    def __init__(
        self,
        base_url: str,
        ids: dict[str, list[str]],
        samples: dict[str, list[Args]],
        staff: Staff,
        *,
        rate: float,
        seed: int,
    ) -> None:
        self.base_url = base_url
        self.staff = staff
        self.seed = seed
        self.rng = random.Random(f"soak:{seed}")
        self.patients = ids.get("Patient", [])
        self.encounters = ids.get("Encounter", [])
        if not self.patients:
            raise RuntimeError("the soak needs a loaded caseload (no Patient ids)")
        self.searches: list[tuple[Query, list[Args]]] = [
            (query, samples[query.sample]) for query in QUERIES if samples.get(query.sample)
        ]
        self.created: deque[tuple[str, dict[str, Any]]] = deque(maxlen=_KEEP_CREATED)
        self.records: list[Record] = []
        self.failures: Counter[str] = Counter()
        self.resources_written = 0
        self.interval = 1.0 / rate
        self.started = 0.0
        self._next_slot = 0.0
        self._serial = 0
        self._kinds = [kind for kind, _ in MIX]
        self._weights = [weight for _, weight in MIX]
        self._send: dict[str, Callable[[httpx.AsyncClient], Coroutine[Any, Any, Sent]]] = {
            "read": self._read,
            "search": self._search,
            "create": self._create,
            "update": self._update,
            "transaction": self._transaction,
        }

    def begin(self) -> None:
        """Start the clock (record times and the first request slot)."""
        self.started = self._next_slot = time.perf_counter()

    async def run(self, clients: int, duration_s: float) -> None:
        """Send requests until `duration_s` after `begin()`; in-flight requests complete."""
        deadline = self.started + duration_s
        await asyncio.gather(*(self._client(deadline) for _ in range(clients)))

    async def _client(self, deadline: float) -> None:
        headers = client_headers(body=True)
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(
            base_url=f"{self.base_url}/", headers=headers, timeout=timeout
        ) as client:
            while True:
                now = time.perf_counter()
                slot = max(self._next_slot, now)
                if slot >= deadline:
                    return
                self._next_slot = slot + self.interval
                await asyncio.sleep(slot - now)
                kind = self.rng.choices(self._kinds, self._weights)[0]
                started = time.perf_counter()
                try:
                    ok, detail = await self._send[kind](client)
                except httpx.HTTPError as error:
                    ok, detail = self._failed(kind, f"{type(error).__name__}: {error}"), kind
                done = time.perf_counter()
                self.records.append(Record(done - self.started, done - started, kind, ok, detail))

    def _failed(self, kind: str, detail: str) -> bool:
        key = f"{kind}: {detail[:300]}"
        if key in self.failures or len(self.failures) < _MAX_FAILURES_KEPT:
            self.failures[key] += 1
        return False

    def _check(self, kind: str, response: httpx.Response, expected: int) -> bool:
        if response.status_code == expected:
            return True
        return self._failed(kind, f"{response.status_code} {response.text[:300]}")

    def _next(self) -> tuple[int, str]:
        """A fresh builder index (new data never repeats a loaded member's) and a patient."""
        self._serial += 1
        return 1_000_000_000 + self._serial, self.rng.choice(self.patients)

    def _day(self) -> date:
        return AS_OF + timedelta(days=self.rng.randint(1, 120))

    async def _read(self, client: httpx.AsyncClient) -> Sent:
        draw = self.rng.random()
        if draw < 0.2 and self.created:
            path = f"Observation/{self.rng.choice(self.created)[0]}"
        elif draw < 0.5 and self.encounters:
            path = f"Encounter/{self.rng.choice(self.encounters)}"
        else:
            path = f"Patient/{self.rng.choice(self.patients)}"
        ok = self._check("read", await client.get(path), 200)
        return ok, f"read {path.partition('/')[0]}"

    async def _search(self, client: httpx.AsyncClient) -> Sent:
        query, values = self.rng.choice(self.searches)
        path = query.path(self.rng.choice(values))
        return self._check("search", await client.get(path), 200), f"search {query.name}"

    async def _create(self, client: httpx.AsyncClient) -> Sent:
        index, patient = self._next()
        body = vital_sign(self.seed, index, self.staff, patient, self._day())
        response = await client.post("Observation", content=orjson.dumps(body))
        if not self._check("create", response, 201):
            return False, "create"
        created = orjson.loads(response.content)
        self.created.append((created["id"], body))
        self.resources_written += 1
        return True, "create"

    async def _update(self, client: httpx.AsyncClient) -> Sent:
        if not self.created:
            return await self._create(client)
        rid, body = self.rng.choice(self.created)
        amended = copy.deepcopy(body) | {"id": rid, "status": "amended"}
        quantity = amended["valueQuantity"]
        quantity["value"] = round(quantity["value"] * self.rng.uniform(0.97, 1.03), 1)
        response = await client.put(f"Observation/{rid}", content=orjson.dumps(amended))
        return self._check("update", response, 200), "update"

    async def _transaction(self, client: httpx.AsyncClient) -> Sent:
        index, patient = self._next()
        bundle = visit_bundle(self.seed, index, self.staff, patient, self._day())
        response = await client.post("", content=orjson.dumps(bundle))
        if not self._check("transaction", response, 200):
            return False, "transaction"
        self.resources_written += len(bundle["entry"])
        return True, "transaction"
