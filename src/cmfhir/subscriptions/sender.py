"""The sender: a worker that sends each Subscription's notifications to its rest-hook
endpoint (R5 Backport IG 1.1.0, "Notifications", "Handshake", "Heartbeat", "Errors").

It works in rounds. A round is one short transaction of two statements: the outcomes of the
sends finished since the last round recorded (delivery state, attempts, leases freed:
store/subscriptions.py `record`), and up to `concurrency` due Subscriptions leased with
their next notifications (`claim`). Then, with no transaction open, it builds each one's
handshake, next batch (in number order, at most max-count) or heartbeat, and posts them all
at once; the next round starts when they have all answered or after `round_wait_s`, so an
endpoint that is slow to answer holds back nobody else's (its send is recorded in a later
round). The database work is per round, not per notification: what a round costs is the
same for one Subscription as for a hundred.

A failed send is retried with exponential backoff (5 s doubling, at most 10 minutes) for
`retry_window` (24 h), after which the Subscription goes to `error`; setting it back to
`requested` re-activates it and the backlog follows the handshake. A sender that dies
mid-send loses its leases when they run out, and the batches are sent again: at least once,
in order, with the same event numbers. Time comes from an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.request import getproxies

import httpx

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.interactions import update
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.store import SubscriptionRows
from cmfhir.store.subscriptions import Attempt, Claimed, DeliveryState, Notification, Outcome
from cmfhir.subscriptions.events import Batch, foci_of
from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature
from cmfhir.subscriptions.matcher import Clock, system_clock
from cmfhir.subscriptions.notifications import Focus, notification_bundle, status_parameters
from cmfhir.subscriptions.posting import Endpoints, PostError
from cmfhir.waiting import either

__all__ = ["SubscriptionSender", "backoff"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10
DEFAULT_MAX_COUNT = 100
MAX_BACKOFF = timedelta(minutes=10)
# A lease covers the longest send: `backport-timeout` (at least the default) plus this.
MAX_TIMEOUT_S = DEFAULT_TIMEOUT_S
LEASE_MARGIN_S = 5

# A Subscription resource's status to set (after the outcome is recorded): (id, status, error).
_Change = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class _Step:
    """A send prepared under a lease: what to POST, and what it stands for."""

    state: DeliveryState
    loaded: Loaded
    kind: str
    bundle: dict[str, Any]
    events: list[Focus]
    now: datetime


@dataclass(frozen=True, slots=True)
class _Done:
    """A step's outcome to record, and the resource status it changes (if any)."""

    outcome: Outcome
    change: _Change | None


def backoff(failures: int) -> timedelta:
    """Wait before the next try after `failures` failures in a row: 5 s, 10 s, 20 s ...
    at most 10 minutes."""
    return min(timedelta(seconds=5 * 2 ** min(failures - 1, 16)), MAX_BACKOFF)


class SubscriptionSender:
    name = "subscriptions:sender"

    def __init__(
        self,
        ctx: FhirContext,
        feature: SubscriptionFeature,
        wake: asyncio.Event | None = None,
        *,
        clock: Clock = system_clock,
        poll_s: float = 0.5,
        concurrency: int = 64,
        round_wait_s: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ctx = replace(ctx, principal=TRUSTED)
        self.feature = feature
        self.clock = clock
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.round_wait_s = round_wait_s
        self._wake = wake or asyncio.Event()
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        # Kept connections to the endpoints (no transport given, no proxies named).
        self._endpoints = Endpoints(max_idle=concurrency)
        # Whether the environment names proxies, looked at once a round (it reads the whole
        # environment: per send, that was a tenth of the sender's CPU).
        self._proxied = False
        # Set when the worker is asked to stop: no new send starts, and those under way are
        # abandoned (their batches are sent again later: at least once).
        self._stop = asyncio.Event()
        # Each Subscription's settings and opened seal by the version they were read from:
        # parsed again only when the Subscription changes.
        self._loaded: dict[str, tuple[int, Loaded]] = {}
        # The work done so far: `rounds` (transactions), `claimed`, `sent`, `recorded`.
        self.work: Counter[str] = Counter()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    done = await self.send_once()
                except FhirError as error:  # the database away, or a race
                    log.warning("%s: %s; retrying", self.name, type(error).__name__)
                    done = 0
                if done:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(either(self._wake, stop), self.poll_s)
        finally:
            self._stop = asyncio.Event()  # `send_once` may be called again (tests)
            await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._endpoints.aclose()

    async def send_once(self) -> int:
        """Serve every Subscription whose next step is due, in rounds, until none is due and
        every send has been recorded; how many steps."""
        served = 0
        sending: dict[asyncio.Future[tuple[int | None, str | None]], _Step] = {}
        finished: list[_Done] = []
        loop = asyncio.get_running_loop()
        look, looked = True, loop.time()
        try:
            while True:
                self._wake.clear()
                stopping = self._stop.is_set()
                abandoned: list[str] = []
                if stopping and sending:
                    abandoned = await self._abandon(sending)
                room = 0 if stopping or not look else self.concurrency - len(sending)
                started: list[asyncio.Future[tuple[int | None, str | None]]] = []
                if finished or abandoned or room > 0:
                    steps, settled = await self._round(finished, abandoned, room)
                    served += len(finished)
                    await self._set_statuses(d.change for d in finished if d.change)
                    finished = settled
                    if room > 0:
                        # Claimed as many as there was room for: more may be due.
                        look, looked = len(steps) + len(settled) == room, loop.time()
                    for step in steps:
                        post = asyncio.ensure_future(self._post(step.loaded, step.bundle))
                        sending[post] = step
                        started.append(post)
                if not sending:
                    if finished:
                        continue
                    return served
                # The round's sends all answered (or, past `round_wait_s`, those that did);
                # with none started, the first of those still under way, a wake-up or the
                # poll's time (a retry or heartbeat may have come due).
                if started:
                    await self._until(started, every=True, within=self.round_wait_s)
                else:
                    await self._until(list(sending), every=False, within=self.poll_s)
                done = [p for p in sending if p.done()]
                for posting in done:
                    finished.append(self._sent(sending.pop(posting), *posting.result()))
                # A finished send may leave more of its backlog to claim.
                look = look or bool(done) or self._wake.is_set()
                look = look or loop.time() - looked >= self.poll_s
        finally:
            for posting in sending:
                posting.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    async def _until(
        self, futures: Sequence[asyncio.Future[Any]], *, every: bool, within: float
    ) -> None:
        """Wait until every one (or the first) of `futures` is done, the worker is asked to
        stop, or `within` seconds pass; waiting for the first, a wake-up ends the wait too."""
        how = asyncio.ALL_COMPLETED if every else asyncio.FIRST_COMPLETED
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(asyncio.wait(futures, return_when=how))
        ]
        waits.append(asyncio.ensure_future(self._stop.wait()))
        if not every:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()  # not the futures waited for: they go on
            await asyncio.gather(*waits, return_exceptions=True)

    async def _abandon(
        self, sending: dict[asyncio.Future[tuple[int | None, str | None]], _Step]
    ) -> list[str]:
        """Asked to stop: the sends under way are abandoned (no attempt recorded) and their
        leases are given back at once, so that the next sender (in this process after a
        restart, or in another one) sends those batches again without waiting for the
        leases to run out; the endpoints may have received them (at least once). Those
        that answered meanwhile are recorded as usual."""
        for posting in sending:
            posting.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        abandoned = []
        for posting, step in list(sending.items()):
            if posting.cancelled():
                abandoned.append(step.state.subscription_id)
                del sending[posting]
        return abandoned

    async def _round(
        self, finished: Sequence[_Done], abandoned: Sequence[str], room: int
    ) -> tuple[list[_Step], list[_Done]]:
        """One transaction: the finished steps recorded, the abandoned leases given back,
        up to `room` due Subscriptions leased. Then what to send to each (the sends to
        start), or its outcome when there is nothing to send (recorded next round)."""
        now = self.clock()
        self.work["rounds"] += 1
        self._proxied = bool(getproxies())
        async with self.ctx.store.transaction(principal=TRUSTED) as repo:
            rows = SubscriptionRows(repo.conn)
            await rows.record([d.outcome for d in finished])
            if abandoned:
                await rows.lease(abandoned, now)
            claimed: list[Claimed] = []
            if room > 0:
                claimed = await rows.claim(
                    now,
                    now + self._lease(None),
                    room,
                    per_subscription=DEFAULT_MAX_COUNT,
                    limits=self._limits(),
                )
            loaded = [self._load(c) for c in claimed]
            longer: dict[timedelta, list[str]] = {}
            for c, found in zip(claimed, loaded, strict=True):
                if found is not None and (found.config.timeout_s or 0) > MAX_TIMEOUT_S:
                    longer.setdefault(self._lease(found), []).append(c.state.subscription_id)
            for lease, ids in longer.items():  # rare: a timeout longer than the default
                await rows.lease(ids, now + lease)
        self.work["recorded"] += len(finished)
        self.work["claimed"] += len(claimed)
        return await self._prepare(claimed, loaded, now)

    def _limits(self) -> dict[str, int]:
        """The batch size of each Subscription known to set one other than the default."""
        return {
            sid: loaded.config.max_count
            for sid, (_, loaded) in self._loaded.items()
            if loaded.config.max_count and loaded.config.max_count != DEFAULT_MAX_COUNT
        }

    def _load(self, claimed: Claimed) -> Loaded | None:
        sid = claimed.state.subscription_id
        if claimed.content is None or claimed.version is None:
            self._loaded.pop(sid, None)
            return None
        known = self._loaded.get(sid)
        if known is not None and known[0] == claimed.version:
            return known[1]
        loaded = self.feature.loaded(sid, claimed.content)
        self._loaded[sid] = (claimed.version, loaded)
        return loaded

    def _lease(self, loaded: Loaded | None) -> timedelta:
        """How long a send may take before another sender may take the Subscription over:
        the longest timeout a send may wait, and some."""
        timeout = loaded.config.timeout_s if loaded is not None else None
        return timedelta(seconds=max(timeout or 0, MAX_TIMEOUT_S) + LEASE_MARGIN_S)

    async def _prepare(
        self, claimed: Sequence[Claimed], loaded: Sequence[Loaded | None], now: datetime
    ) -> tuple[list[_Step], list[_Done]]:
        """What to send to each leased Subscription, or its outcome when there is nothing
        to send (gone or off, a websocket one, a seal that does not open, nothing due)."""
        settled: list[_Done] = []
        plans: list[tuple[DeliveryState, Loaded, str, Sequence[Notification]]] = []
        for c, found in zip(claimed, loaded, strict=True):
            state = c.state
            if found is None or found.config.status == "off":
                settled.append(self._outcome(state, now, status="off"))
            elif state.channel == "websocket":
                settled.append(self._websocket(state))
            elif found.principal is None:
                log.warning("subscription seal cannot be opened; nothing delivered")
                settled.append(
                    self._outcome(state, now, status="error", failed="sealed data unreadable")
                )
            elif state.status == "requested":
                plans.append((state, found, "handshake", ()))
            elif state.events_since_start > state.delivered_through and (
                state.failures == 0 or (state.next_attempt_at or now) <= now
            ):
                limit = found.config.max_count or DEFAULT_MAX_COUNT
                plans.append((state, found, "event-notification", c.notifications[:limit]))
            elif state.heartbeat_s and (
                state.last_sent_at is None
                or state.last_sent_at + timedelta(seconds=state.heartbeat_s) <= now
            ):
                plans.append((state, found, "heartbeat", ()))
            else:
                settled.append(self._outcome(state, now))
        batches: list[Batch] = [
            (found, notes, found.config.content) for _, found, _, notes in plans
        ]
        events = await foci_of(self.ctx, batches) if plans else []
        steps = []
        for (state, found, kind, _), shown in zip(plans, events, strict=True):
            config = found.config
            status = status_parameters(
                base=self.feature.base,
                subscription_id=config.id,
                topic=config.topic,
                status=state.status,
                kind=kind,
                events_since_start=state.events_since_start,
                events=shown,
            )
            bundle = notification_bundle(
                status,
                base=self.feature.base,
                subscription_id=config.id,
                now=now,
                events=shown,
                content=config.content,
            )
            steps.append(_Step(state, found, kind, bundle, shown, now))
        return steps, settled

    def _outcome(
        self,
        state: DeliveryState,
        now: datetime,
        *,
        status: str | None = None,
        through: int | None = None,
        sent: bool = False,
        failed: str | None = None,
        attempt: Attempt | None = None,
    ) -> _Done:
        """The outcome to record and when the next handshake, retry or heartbeat is due;
        the resource's new status when it changed to one the Subscription resource shows."""
        status = status or state.status
        failing_since, failures = state.failing_since, state.failures
        last_sent = now if sent else state.last_sent_at
        next_at: datetime | None = None
        if failed is not None:
            failing_since = failing_since or now
            failures += 1
            if now - failing_since >= self.feature.retry_window:
                status = "error"
            else:
                next_at = now + backoff(failures)
        else:
            failing_since, failures = None, 0
            if status == "requested":
                next_at = now
            elif status == "active" and state.heartbeat_s and last_sent is not None:
                next_at = last_sent + timedelta(seconds=state.heartbeat_s)
        outcome = Outcome(
            state.subscription_id,
            status=status,
            delivered_through=max(state.delivered_through, through or 0),
            next_attempt_at=next_at,
            failing_since=failing_since,
            failures=failures,
            last_error=failed,
            last_sent_at=last_sent,
            claimed_status=state.status,
            attempt=attempt,
        )
        change = None
        if status != state.status and status in ("active", "error"):
            change = (state.subscription_id, status, failed)
        return _Done(outcome, change)

    def _websocket(self, state: DeliveryState) -> _Done:
        """Websocket Subscriptions are sent to by their bound connections
        (subscriptions/websocket.py); here they only become active."""
        outcome = Outcome(
            state.subscription_id,
            status="active",
            delivered_through=state.delivered_through,
            next_attempt_at=None,
            failing_since=None,
            failures=0,
            last_error=None,
            last_sent_at=state.last_sent_at,
            claimed_status=None,
        )
        change = None if state.status == "active" else (state.subscription_id, "active", None)
        return _Done(outcome, change)

    def _sent(self, step: _Step, code: int | None, error: str | None) -> _Done:
        """A send's outcome: the attempt, the lease freed, the next step scheduled."""
        self.work["sent"] += 1
        first = step.events[0].event_number if step.events else None
        last = step.events[-1].event_number if step.events else None
        attempt = Attempt(
            attempted_at=step.now,
            kind=step.kind,
            first_event=first,
            last_event=last,
            outcome="failed" if error else "delivered",
            http_status=code,
            error=error,
        )
        if error is not None:
            return self._outcome(step.state, step.now, failed=error, attempt=attempt)
        return self._outcome(
            step.state,
            step.now,
            status="active" if step.kind == "handshake" else None,
            through=last,
            sent=True,
            attempt=attempt,
        )

    async def _post(self, loaded: Loaded, bundle: dict[str, Any]) -> tuple[int | None, str | None]:
        config = loaded.config
        assert config.endpoint is not None
        headers = {"Content-Type": "application/fhir+json"}
        for header in loaded.headers:
            name, _, value = header.partition(":")
            if name.strip():
                headers[name.strip()] = value.strip()
        timeout = config.timeout_s or DEFAULT_TIMEOUT_S
        content = dump_json(bundle)
        try:
            if self._transport is None and not self._proxied:
                # Straight to the endpoint on a kept connection (subscriptions/posting.py):
                # a general client's per-request work cost more CPU than the send itself.
                code = await self._endpoints.post(config.endpoint, content, headers, timeout)
                return code, None if 200 <= code < 300 else f"HTTP {code}"
            if self._transport is None:
                # Proxies configured: the client picks the proxy (or none) per endpoint.
                response = await self._client().post(
                    config.endpoint, content=content, headers=headers, timeout=timeout
                )
            else:
                request = httpx.Request(
                    "POST",
                    config.endpoint,
                    content=content,
                    headers=headers,
                    extensions={"timeout": httpx.Timeout(timeout).as_dict()},
                )
                response = await self._transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except PostError as error:
            return None, error.name
        except httpx.HTTPError as error:
            return None, type(error).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    def _connection_limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            limits = self._connection_limits()
            self._http = httpx.AsyncClient(transport=self._transport, limits=limits)
        return self._http

    async def _set_statuses(self, changes: Iterable[_Change]) -> None:
        for subscription_id, status, error in changes:
            await self._set_resource_status(subscription_id, status, error)

    async def _set_resource_status(
        self, subscription_id: str, status: str, error: str | None
    ) -> None:
        """The Subscription resource's status, as the server sees it (a new version)."""
        async with self.ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
            found = await repo.read("Subscription", subscription_id)
        if found is None or found.deleted or found.content is None:
            return
        content: dict[str, Any] = parse_json(found.content)
        if content.get("status") == status:
            return
        content["status"] = status
        if error:
            content["error"] = f"Delivery failed for too long: {error}"
        else:
            content.pop("error", None)
        try:
            await update(
                self.ctx, "Subscription", subscription_id, content, if_match=f'W/"{found.version}"'
            )
        except FhirError as failure:
            # Changed meanwhile by its owner: their change decides what happens next.
            log.info("subscription status not updated: %s", type(failure).__name__)
