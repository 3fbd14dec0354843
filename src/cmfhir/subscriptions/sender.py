"""The sender: a worker that sends each Subscription's notifications to its rest-hook
endpoint (R5 Backport IG 1.1.0, "Notifications", "Handshake", "Heartbeat", "Errors").

It leases one due Subscription at a time (store/subscriptions.py `claim_due`), sends the
handshake, its next batch (in number order, at most max-count) or a heartbeat, and records
the attempt. A failed send is retried with exponential backoff (5 s doubling, at most 10
minutes) for `retry_window` (24 h), after which the Subscription goes to `error`; setting it
back to `requested` re-activates it and the backlog follows the handshake. A sender that
dies mid-send loses its lease when it runs out, and the batch is sent again: at least once,
in order. Time comes from an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.interactions import update
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.store import Repository, SubscriptionRows
from cmfhir.store.subscriptions import DeliveryState
from cmfhir.subscriptions.events import foci
from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature
from cmfhir.subscriptions.matcher import Clock, system_clock
from cmfhir.subscriptions.notifications import Focus, notification_bundle, status_parameters
from cmfhir.waiting import either

__all__ = ["SubscriptionSender", "backoff"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10
DEFAULT_MAX_COUNT = 100
MAX_BACKOFF = timedelta(minutes=10)
# A lease covers the longest send: `backport-timeout` (at least the default) plus this.
MAX_TIMEOUT_S = DEFAULT_TIMEOUT_S
LEASE_MARGIN_S = 5


@dataclass(frozen=True, slots=True)
class _Step:
    """A send prepared under a lease: what to POST, and what it stands for."""

    loaded: Loaded
    kind: str
    bundle: dict[str, Any]
    events: list[Focus]
    now: datetime


async def _done_or_set(task: asyncio.Future[Any], event: asyncio.Event) -> None:
    """Return once `task` is done or `event` is set (`task` is left running)."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)


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
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ctx = replace(ctx, principal=TRUSTED)
        self.feature = feature
        self.clock = clock
        self.poll_s = poll_s
        self.concurrency = concurrency
        self._wake = wake or asyncio.Event()
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        # Set when the worker is asked to stop: no new send starts, and one under way is
        # abandoned (its batch is sent again later: at least once).
        self._stop = asyncio.Event()

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

    async def send_once(self) -> int:
        """Serve every Subscription whose next step is due, `concurrency` sends at a time,
        until none is due; how many steps. Each of the concurrent loops takes the next due
        Subscription as soon as its own send ends (no waiting for the slowest of a round)."""

        async def loop(channel: str) -> int:
            served = 0
            while not self._stop.is_set() and await self._serve_one(channel):
                served += 1
            return served

        served = 0
        # One look first: when nothing is due (every poll of an idle server) that is one
        # query, not one per concurrent loop.
        if not self._stop.is_set() and await self._serve_one("rest-hook"):
            loops = (loop("rest-hook") for _ in range(self.concurrency))
            served = 1 + sum(await asyncio.gather(*loops))
        return served + await loop("websocket")

    async def _serve_one(self, channel: str) -> int:
        """One step of one due Subscription: leased in a short transaction, sent with no
        transaction open (a transaction holding a row lock across the HTTP request would
        hold back every gap-free outbox reader meanwhile), then recorded and released."""
        now = self.clock()
        async with self.ctx.store.transaction(principal=TRUSTED) as repo:
            rows = SubscriptionRows(repo.conn)
            state = await rows.claim_due(now, channel, now + self._lease(None))
            if state is None:
                return 0
            loaded = await self.feature.load(repo, state.subscription_id)
            if channel == "websocket" or loaded is None or loaded.config.status == "off":
                changed = await self._settle(rows, state, loaded, now)
                step = None
            else:
                if (loaded.config.timeout_s or 0) > MAX_TIMEOUT_S:
                    await rows.lease(state.subscription_id, now + self._lease(loaded))
                step = await self._prepare(repo, rows, state, loaded, now)
                changed = None if isinstance(step, _Step) else step
        if isinstance(step, _Step):
            sent = await self._post_unless_stopped(step)
            if sent is None:
                return 1
            code, error = sent
            async with self.ctx.store.transaction(principal=TRUSTED) as repo:
                changed = await self._record(SubscriptionRows(repo.conn), state, step, code, error)
        if changed is not None:
            await self._set_resource_status(state.subscription_id, *changed)
        return 1

    def _lease(self, loaded: Loaded | None) -> timedelta:
        """How long a send may take before another sender may take the Subscription over:
        the longest timeout a send may wait, and some."""
        timeout = loaded.config.timeout_s if loaded is not None else None
        return timedelta(seconds=max(timeout or 0, MAX_TIMEOUT_S) + LEASE_MARGIN_S)

    async def _settle(
        self,
        rows: SubscriptionRows,
        state: DeliveryState,
        loaded: Loaded | None,
        now: datetime,
    ) -> tuple[str, str | None] | None:
        """A step that sends nothing over REST: a Subscription gone or off, or a websocket
        one (its bound connections send)."""
        if loaded is None or loaded.config.status == "off":
            return await self._finish(rows, state, now=now, status="off")
        return await self._websocket_step(rows, state, loaded, now)

    async def _finish(
        self,
        rows: SubscriptionRows,
        state: DeliveryState,
        *,
        now: datetime,
        status: str | None = None,
        through: int | None = None,
        sent: bool = False,
        failed: str | None = None,
    ) -> tuple[str, str | None] | None:
        """Record the outcome and when the next handshake, retry or heartbeat is due; the
        new status when it changed to one the Subscription resource shows."""
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
        await rows.after_attempt(
            state.subscription_id,
            status=status,
            delivered_through=max(state.delivered_through, through or 0),
            next_attempt_at=next_at,
            failing_since=failing_since,
            failures=failures,
            last_error=failed,
            last_sent_at=last_sent,
            claimed_status=state.status,
        )
        if status != state.status and status in ("active", "error"):
            return status, failed
        return None

    async def _websocket_step(
        self, rows: SubscriptionRows, state: DeliveryState, loaded: Loaded | None, now: datetime
    ) -> tuple[str, str | None] | None:
        """Websocket Subscriptions are sent to by their bound connections
        (subscriptions/websocket.py); here they only become active."""
        if loaded is None or loaded.config.status == "off":
            return await self._finish(rows, state, now=now, status="off")
        await rows.after_attempt(
            state.subscription_id,
            status="active",
            delivered_through=state.delivered_through,
            next_attempt_at=None,
            failing_since=None,
            failures=0,
            last_error=None,
            last_sent_at=state.last_sent_at,
        )
        return ("active", None) if state.status != "active" else None

    async def _prepare(
        self,
        repo: Repository,
        rows: SubscriptionRows,
        state: DeliveryState,
        loaded: Loaded,
        now: datetime,
    ) -> _Step | tuple[str, str | None] | None:
        """What to send to a leased rest-hook Subscription (a `_Step`), or, when there is
        nothing to send, the outcome recorded at once."""
        if loaded.principal is None:
            log.warning("subscription seal cannot be opened; nothing delivered")
            return await self._finish(
                rows, state, now=now, status="error", failed="sealed data unreadable"
            )
        config = loaded.config
        events: list[Focus] = []
        if state.status == "requested":
            kind = "handshake"
        elif state.events_since_start > state.delivered_through and (
            state.failures == 0 or (state.next_attempt_at or now) <= now
        ):
            kind = "event-notification"
            events = await foci(
                self.ctx,
                loaded,
                state.delivered_through + 1,
                None,
                config.max_count or DEFAULT_MAX_COUNT,
                repo=repo,
            )
        elif state.heartbeat_s and (
            state.last_sent_at is None
            or state.last_sent_at + timedelta(seconds=state.heartbeat_s) <= now
        ):
            kind = "heartbeat"
        else:
            return await self._finish(rows, state, now=now)
        status = status_parameters(
            base=self.feature.base,
            subscription_id=config.id,
            topic=config.topic,
            status=state.status,
            kind=kind,
            events_since_start=state.events_since_start,
            events=events,
        )
        bundle = notification_bundle(
            status,
            base=self.feature.base,
            subscription_id=config.id,
            now=now,
            events=events,
            content=config.content,
        )
        return _Step(loaded, kind, bundle, events, now)

    async def _record(
        self,
        rows: SubscriptionRows,
        state: DeliveryState,
        step: _Step,
        code: int | None,
        error: str | None,
    ) -> tuple[str, str | None] | None:
        """The attempt recorded, the lease freed, the next step scheduled."""
        first = step.events[0].event_number if step.events else None
        last = step.events[-1].event_number if step.events else None
        await rows.record_attempt(
            step.loaded.config.id,
            attempted_at=step.now,
            kind=step.kind,
            first_event=first,
            last_event=last,
            outcome="failed" if error else "delivered",
            http_status=code,
            error=error,
        )
        if error is not None:
            return await self._finish(rows, state, now=step.now, failed=error)
        return await self._finish(
            rows,
            state,
            now=step.now,
            status="active" if step.kind == "handshake" else None,
            through=last,
            sent=True,
        )

    async def _post_unless_stopped(self, step: _Step) -> tuple[int | None, str | None] | None:
        """The POST's outcome; None when the worker was asked to stop first. Then the send
        is abandoned and its lease given back at once, so that the next sender (in this
        process after a restart, or in another one) sends the batch again without waiting
        for the lease to run out; the endpoint may have received it (at least once)."""
        posting = asyncio.ensure_future(self._post(step.loaded, step.bundle))
        try:
            await _done_or_set(posting, self._stop)
        finally:
            if not posting.done():
                posting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await posting
        if not posting.cancelled():
            return posting.result()
        async with self.ctx.store.transaction(principal=TRUSTED) as repo:
            await SubscriptionRows(repo.conn).lease(step.loaded.config.id, step.now)
        return None

    async def _post(self, loaded: Loaded, bundle: dict[str, Any]) -> tuple[int | None, str | None]:
        config = loaded.config
        assert config.endpoint is not None
        headers = {"Content-Type": "application/fhir+json"}
        for header in loaded.headers:
            name, _, value = header.partition(":")
            if name.strip():
                headers[name.strip()] = value.strip()
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self._transport)
        try:
            response = await self._http.post(
                config.endpoint,
                content=dump_json(bundle),
                headers=headers,
                timeout=config.timeout_s or DEFAULT_TIMEOUT_S,
            )
        except httpx.HTTPError as error:
            return None, type(error).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

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
