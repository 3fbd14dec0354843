"""The matcher: an outbox consumer (store/consumers.py, workers/outbox.py) that numbers each
Subscription's notifications (R5 Backport IG 1.1.0, "Notifications").

For each change it asks the live Subscriptions that can match it (subscriptions/candidates.py)
their topic and filters (subscriptions/matching.py; searches once per batch) and gives a
matching Subscription its next event number, in the transaction that advances the
consumer's position: numbers are contiguous and survive a crash, and a change is numbered
once however often a batch is retried. A Subscription's own writes bring its delivery state
in line (a `requested` status makes a handshake due).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cmfhir.auth.principal import TRUSTED, Principal
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import Event, EventPosition, Repository, SubscriptionRows
from cmfhir.store import consumers as positions
from cmfhir.store.subscriptions import NewNotification
from cmfhir.subscriptions.candidates import LIVE, Candidate, SubscriptionIndex
from cmfhir.subscriptions.feature import Loaded, SubscriptionFeature
from cmfhir.subscriptions.matching import EventCheck, Pairs, visible_ids

__all__ = [
    "CONSUMER",
    "LIVE",
    "SUBSCRIPTION_CHANNEL",
    "Clock",
    "SubscriptionMatcher",
    "system_clock",
]

CONSUMER = "subscriptions"
# NOTIFYed when notifications were numbered: the senders wake.
SUBSCRIPTION_CHANNEL = "cmfhir_subscription"
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class SubscriptionMatcher:
    """The `EventHandler` of the `subscriptions` consumer."""

    name = CONSUMER
    # From the oldest event kept, so that Subscriptions written while no worker ran are seen.
    from_start = True
    # Committed changes are numbered as soon as they are seen, not only once every older
    # transaction has ended (an ingest, the gap engine's batches or a long transaction
    # would hold every notification back meanwhile). A change seen again (when the
    # gap-free position reaches it, in another process or after a restart) is numbered
    # once: `add_notifications` skips a (Subscription, version) already numbered.
    read_ahead = True

    def __init__(
        self, ctx: FhirContext, feature: SubscriptionFeature, *, clock: Clock = system_clock
    ) -> None:
        self.ctx = replace(ctx, principal=TRUSTED)
        self.feature = feature
        self.clock = clock
        self._subscriptions: dict[str, Loaded] = {}
        self._index: SubscriptionIndex | None = None
        self._after: EventPosition | None = None
        self._contents: dict[tuple[int, int], str] = {}
        # The matching work done so far: `events` looked at, `checked` (event, Subscription)
        # pairs whose filters were decided, `searches` run to decide them.
        self.work: Counter[str] = Counter()

    @property
    def index(self) -> SubscriptionIndex:
        if self._index is None:
            self._index = SubscriptionIndex(
                self._subscriptions.values(), self.feature.topics, self.ctx.registry
            )
        return self._index

    async def handle(self, repo: Repository, events: Sequence[Event]) -> None:
        now = self.clock()
        rows = SubscriptionRows(repo.conn)
        position = (await positions.positions(repo)).get(CONSUMER)
        if position is None or position != self._after:
            # Another process moved the position (or this one just started): what this one
            # knows of the Subscriptions may be stale.
            await self._reload(repo, rows)
        # The versions the topics' triggers look at, read in one query for the batch.
        watched = self.feature.topics.resource_types()
        keys = [
            (e.rid, version)
            for e in events
            if e.resource_type in watched
            for version in (e.version, e.version - 1)
            if version > 0
        ]
        subscribed = self._subscriptions or any(e.resource_type == "Subscription" for e in events)
        self._contents = await rows.contents(keys) if keys and subscribed else {}
        # Per event, the Subscriptions it concerns: decided (True), or to be searched for.
        matched: list[tuple[Event, list[tuple[Candidate, bool]]]] = []
        searches: dict[tuple[Principal, str, Pairs], set[str]] = {}
        for event in events:
            if event.resource_type == "Subscription":
                await self._follow(repo, rows, event.id, now)
                continue
            decided = await self._match(event)
            for candidate, verdict in decided:
                if not verdict:
                    principal = candidate.loaded.principal
                    assert principal is not None
                    group = (principal, event.resource_type, candidate.pairs)
                    searches.setdefault(group, set()).add(event.id)
            if decided:
                matched.append((event, decided))
        found: dict[tuple[Principal, str, Pairs], set[str]] = {}
        for group, ids in searches.items():
            self.work["searches"] += 1
            found[group] = await visible_ids(self.ctx, group[0], group[1], ids, group[2])
        made: list[NewNotification] = []
        for event, decided in matched:
            for candidate, verdict in decided:
                if not verdict:
                    principal = candidate.loaded.principal
                    assert principal is not None
                    group = (principal, event.resource_type, candidate.pairs)
                    if event.id not in found[group]:
                        continue
                made.append(
                    NewNotification(
                        candidate.loaded.config.id,
                        focus_type=event.resource_type,
                        focus_id=event.id,
                        focus_version=event.version,
                        method=event.method,
                        occurred_at=event.created_at,
                    )
                )
        if made:
            # Numbered and the senders NOTIFYed in one statement (a change numbered before
            # for a Subscription is left out).
            self.work["numbered"] += await rows.add_notifications(made, SUBSCRIPTION_CHANNEL)

    def advanced(self, position: EventPosition) -> None:
        """Where the position will be once this batch commits (workers/outbox.py); if it
        does not, the next batch finds the position elsewhere and reloads."""
        self._after = position

    async def _reload(self, repo: Repository, rows: SubscriptionRows) -> None:
        """Another matcher moved the position (or this one just started): the Subscriptions
        known so far, as stored now."""
        self._subscriptions = {}
        self._index = None
        for state in await rows.states():
            if state.status in LIVE:
                loaded = await self.feature.load(repo, state.subscription_id)
                if loaded is not None:
                    self._subscriptions[state.subscription_id] = loaded

    def _content(self, rid: int, version: int) -> dict[str, Any] | None:
        found = self._contents.get((rid, version))
        if found is None:
            return None
        content: dict[str, Any] = parse_json(found)
        return content

    async def _match(self, event: Event) -> list[tuple[Candidate, bool]]:
        """The Subscriptions the event concerns: True when decided, False when a search
        (as the Subscription's creator, with its filters) decides, once per batch."""
        self.work["events"] += 1
        check: EventCheck | None = None

        def event_check() -> EventCheck:
            nonlocal check
            if check is None:
                current = (
                    None if event.method == "delete" else self._content(event.rid, event.version)
                )
                previous = (
                    self._content(event.rid, event.version - 1) if event.version > 1 else None
                )
                check = EventCheck(
                    self.ctx,
                    event.resource_type,
                    event.id,
                    event.method,
                    current,
                    previous,
                    self.index.params(event.resource_type),
                )
            return check

        candidates = self.index.candidates(
            event.resource_type, lambda params: event_check().keys(params)
        )
        out = []
        for candidate in candidates:
            self.work["checked"] += 1
            principal = candidate.loaded.principal
            assert principal is not None
            if not await event_check().topic_fires(candidate.topic):
                continue
            verdict = event_check().decide(candidate.pairs, principal)
            if verdict is None:
                out.append((candidate, False))
            elif verdict:
                out.append((candidate, True))
        return out

    async def _follow(
        self, repo: Repository, rows: SubscriptionRows, subscription_id: str, now: datetime
    ) -> None:
        self._index = None
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
