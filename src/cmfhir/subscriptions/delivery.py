"""The delivery worker: follows the outbox, numbers each Subscription's notifications, and
sends them to rest-hook endpoints (R5 Backport IG 1.1.0, "Notifications", "Handshake",
"Heartbeat", "Errors").

Two loops. The matcher reads the outbox (store/outbox.py order) from its position; for each
change it asks each Subscription's topic and filters (subscriptions/matching.py), and gives
a matching Subscription its next event number, in the transaction that moves its position:
numbers are contiguous and survive a crash. The sender leases one due Subscription at a
time, sends the handshake, its next batch (in number order, at most max-count) or a
heartbeat, and records the attempt. A failed send is retried with exponential backoff
(capped at 10 minutes) for `retry_window` (24 h), after which the Subscription goes to
`error`; setting it back to `requested` re-activates it and the backlog follows the
handshake. Time comes from an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.interactions import update
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.store import Event, EventPosition, Repository, SubscriptionRows
from cmfhir.store.subscriptions import DeliveryState
from cmfhir.subscriptions.events import foci, version_content
from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature
from cmfhir.subscriptions.matching import EventCheck
from cmfhir.subscriptions.notifications import Focus, notification_bundle, status_parameters

__all__ = ["CONSUMER", "Clock", "SubscriptionDelivery", "backoff", "system_clock"]

log = logging.getLogger(__name__)

CONSUMER = "subscriptions"
Clock = Callable[[], datetime]
DEFAULT_TIMEOUT_S = 10
DEFAULT_MAX_COUNT = 100
MAX_BACKOFF = timedelta(minutes=10)
LIVE = ("requested", "active", "error")


def system_clock() -> datetime:
    return datetime.now(UTC)


def backoff(failures: int) -> timedelta:
    """Wait before the next try after `failures` failures in a row: 5 s, 10 s, 20 s ...
    at most 10 minutes."""
    return min(timedelta(seconds=5 * 2 ** min(failures - 1, 16)), MAX_BACKOFF)


class SubscriptionDelivery:
    name = "subscriptions"

    def __init__(
        self,
        ctx: FhirContext,
        feature: SubscriptionFeature,
        *,
        clock: Clock = system_clock,
        poll_s: float = 0.1,
        batch: int = 500,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.ctx = replace(ctx, principal=TRUSTED)
        self.feature = feature
        self.clock = clock
        self.poll_s = poll_s
        self.batch = batch
        self.concurrency = concurrency
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._subscriptions: dict[str, Loaded] = {}
        self._seen: EventPosition | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(
                self._loop(stop, self.match_once), self._loop(stop, self.send_once)
            )
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _loop(self, stop: asyncio.Event, step: Callable[[], Any]) -> None:
        while not stop.is_set():
            try:
                done = await step()
            except Exception:
                log.exception("subscription delivery step failed; retrying")
                done = 0
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)

    # -- matching ---------------------------------------------------------------------------

    async def match_once(self) -> int:
        """Match the next batch of outbox events; how many were read."""
        now = self.clock()
        async with self.ctx.store.transaction() as repo:
            rows = SubscriptionRows(repo.conn)
            position = await rows.claim_position(CONSUMER)
            if position is None:
                return 0
            if position != self._seen:
                await self._reload(repo, rows)
            events, after = await repo.read_events(position, self.batch)
            for event in events:
                await self._match(repo, rows, event, now)
            if events:
                await rows.save_position(CONSUMER, after)
        self._seen = after
        return len(events)

    async def _reload(self, repo: Repository, rows: SubscriptionRows) -> None:
        """Another matcher moved the position (or this one just started): the Subscriptions
        known so far, as stored now."""
        self._subscriptions = {}
        for state in await rows.states():
            if state.status in LIVE:
                loaded = await self.feature.load(repo, state.subscription_id)
                if loaded is not None:
                    self._subscriptions[state.subscription_id] = loaded

    async def _match(
        self, repo: Repository, rows: SubscriptionRows, event: Event, now: datetime
    ) -> None:
        if event.resource_type == "Subscription":
            await self._follow(repo, rows, event.id, now)
            return
        candidates = []
        for loaded in self._subscriptions.values():
            topic = self.feature.topics.get(loaded.config.topic)
            if (
                topic is not None
                and loaded.config.status in LIVE
                and event.resource_type in topic.resource_types
            ):
                candidates.append((topic, loaded))
        if not candidates:
            return
        current = previous = None
        if event.method != "delete":
            current = await version_content(repo, event.resource_type, event.id, event.version)
        if event.version > 1:
            previous = await version_content(repo, event.resource_type, event.id, event.version - 1)
        check = EventCheck(self.ctx, event.resource_type, event.id, event.method, current, previous)
        for topic, loaded in candidates:
            if loaded.principal is None or not await check.topic_fires(topic):
                continue
            if not await check.concerns(topic, loaded.config, loaded.principal):
                continue
            await rows.add_notification(
                loaded.config.id,
                focus_type=event.resource_type,
                focus_id=event.id,
                focus_version=event.version,
                method=event.method,
                occurred_at=event.created_at,
                now=now,
            )

    async def _follow(
        self, repo: Repository, rows: SubscriptionRows, subscription_id: str, now: datetime
    ) -> None:
        loaded = await self.feature.load(repo, subscription_id)
        if loaded is None:
            self._subscriptions.pop(subscription_id, None)
            await rows.set_status(subscription_id, "off")
            return
        self._subscriptions[subscription_id] = loaded
        config = loaded.config
        await rows.sync(
            subscription_id,
            topic=config.topic,
            channel=config.channel,
            status=config.status,
            heartbeat_s=config.heartbeat_s,
            now=now,
        )

    # -- sending ----------------------------------------------------------------------------

    async def send_once(self) -> int:
        """Serve the Subscriptions whose next step is due (a few at a time); how many."""
        served = await asyncio.gather(
            *(self._serve_one("rest-hook") for _ in range(self.concurrency))
        )
        return sum(served) + await self._serve_one("websocket")

    async def _serve_one(self, channel: str) -> int:
        now = self.clock()
        async with self.ctx.store.transaction() as repo:
            rows = SubscriptionRows(repo.conn)
            lease = now + timedelta(seconds=DEFAULT_TIMEOUT_S * 3 + 30)
            state = await rows.claim_due(now, channel, lease)
            if state is None:
                return 0
            loaded = await self.feature.load(repo, state.subscription_id)
        if channel == "websocket":
            await self._websocket_step(state, loaded)
        else:
            await self._rest_hook_step(state, loaded, now)
        return 1

    async def _finish(
        self,
        state: DeliveryState,
        *,
        status: str | None = None,
        through: int | None = None,
        sent_at: datetime | None = None,
        failed: str | None = None,
        now: datetime,
        heartbeat: bool = True,
    ) -> None:
        """Record the outcome and set when the next step is due, from the state as it is now
        (the matcher may have numbered more notifications meanwhile)."""
        async with self.ctx.store.transaction() as repo:
            rows = SubscriptionRows(repo.conn)
            fresh = await rows.state(state.subscription_id, lock=True)
            if fresh is None:
                return
            delivered = max(fresh.delivered_through, through or 0)
            status = status or fresh.status
            failing_since = fresh.failing_since
            failures = fresh.failures
            next_at: datetime | None
            if failed is not None:
                failing_since = failing_since or now
                failures += 1
                if now - failing_since >= self.feature.retry_window:
                    status = "error"
                    next_at = None
                else:
                    next_at = now + backoff(failures)
            else:
                failing_since, failures = None, 0
                last = sent_at or fresh.last_sent_at
                if status not in ("requested", "active"):
                    next_at = None
                elif fresh.events_since_start > delivered or status == "requested":
                    next_at = now
                elif heartbeat and fresh.heartbeat_s and last is not None:
                    next_at = last + timedelta(seconds=fresh.heartbeat_s)
                else:
                    next_at = None
            await rows.after_attempt(
                state.subscription_id,
                status=status,
                delivered_through=delivered,
                next_attempt_at=next_at,
                failing_since=failing_since,
                failures=failures,
                last_error=failed if failed is not None else None,
                last_sent_at=sent_at or fresh.last_sent_at,
            )
        if status != state.status and status in ("active", "error"):
            await self._set_resource_status(state.subscription_id, status, failed)

    async def _websocket_step(self, state: DeliveryState, loaded: Loaded | None) -> None:
        """Websocket Subscriptions are sent to by their bound connections
        (subscriptions/websocket.py); here they only become active."""
        status = "off" if loaded is None or loaded.config.status == "off" else "active"
        async with self.ctx.store.transaction() as repo:
            rows = SubscriptionRows(repo.conn)
            fresh = await rows.state(state.subscription_id, lock=True)
            if fresh is None:
                return
            await rows.after_attempt(
                state.subscription_id,
                status=status if fresh.status in ("requested", "off") else fresh.status,
                delivered_through=fresh.delivered_through,
                next_attempt_at=None,
                failing_since=None,
                failures=0,
                last_error=None,
                last_sent_at=fresh.last_sent_at,
            )
        if status == "active" and state.status == "requested":
            await self._set_resource_status(state.subscription_id, "active", None)

    async def _rest_hook_step(
        self, state: DeliveryState, loaded: Loaded | None, now: datetime
    ) -> None:
        if loaded is None or loaded.config.status == "off":
            await self._finish(state, status="off", now=now)
            return
        if loaded.principal is None:
            log.warning("subscription seal cannot be opened; nothing delivered")
            await self._finish(state, status="error", now=now, failed="sealed data unreadable")
            return
        config = loaded.config
        events: list[Focus] = []
        if state.status == "requested":
            kind = "handshake"
        elif state.events_since_start > state.delivered_through:
            kind = "event-notification"
            events = await foci(
                self.ctx,
                loaded,
                state.delivered_through + 1,
                None,
                config.max_count or DEFAULT_MAX_COUNT,
            )
        elif state.heartbeat_s and (
            state.last_sent_at is None
            or state.last_sent_at + timedelta(seconds=state.heartbeat_s) <= now
        ):
            kind = "heartbeat"
        else:
            await self._finish(state, now=now)
            return
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
        code, error = await self._post(loaded, bundle)
        first = events[0].event_number if events else None
        last = events[-1].event_number if events else None
        async with self.ctx.store.transaction() as repo:
            await SubscriptionRows(repo.conn).record_attempt(
                config.id,
                attempted_at=now,
                kind=kind,
                first_event=first,
                last_event=last,
                outcome="failed" if error else "delivered",
                http_status=code,
                error=error,
            )
        if error is not None:
            await self._finish(state, failed=error, now=now)
        else:
            await self._finish(
                state,
                status="active" if kind == "handshake" else None,
                through=last,
                sent_at=now,
                now=now,
            )

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
        async with self.ctx.store.transaction(read_only=True) as repo:
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
