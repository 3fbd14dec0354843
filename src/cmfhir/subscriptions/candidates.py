"""The live Subscriptions indexed for the matcher (subscriptions/matcher.py), so that an
outbox event is checked only against those that can match it: by the resource types their
topic triggers on and, when their filters are plain equalities decided from the changed
version's index values (matching.py `quick_kind`), by the value of their first filter. An
event of 1,000 members' Subscriptions filtered each to its member is checked against one.
The others (filters that take a search, creators who see less than everything) are checked
against every event of their types, by one search per batch (matching.py `visible_ids`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.subscriptions.feature import Loaded
from cmfhir.subscriptions.matching import Pairs, filter_pairs, quick_key, quick_kind
from cmfhir.subscriptions.topics import Topic, TopicRegistry

__all__ = ["LIVE", "Candidate", "SubscriptionIndex"]

LIVE = ("requested", "active", "error")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A Subscription as it applies to one resource type of its topic."""

    loaded: Loaded
    topic: Topic
    pairs: Pairs  # its filters on the type, as search parameters


@dataclass(slots=True)
class _ByType:
    # Decided without a search and without a filter: every event of the type (that fires
    # the topic) concerns them.
    unfiltered: list[Candidate]
    # Decided without a search, by (parameter, key) of their first filter.
    keyed: dict[tuple[str, str], list[Candidate]]
    # Decided by a search (as their creator, with their filters).
    searched: list[Candidate]
    # The parameters of the keyed ones' filters: the only index values an event needs.
    params: set[str]


class SubscriptionIndex:
    def __init__(
        self,
        subscriptions: Iterable[Loaded],
        topics: TopicRegistry,
        registry: SearchParameterRegistry,
    ) -> None:
        self._registry = registry
        self._types: dict[str, _ByType] = {}
        self.size = 0
        for loaded in subscriptions:
            topic = topics.get(loaded.config.topic)
            if topic is None or loaded.principal is None or loaded.config.status not in LIVE:
                continue  # matches nothing (an unknown topic; a seal that does not open)
            self.size += 1
            for resource_type in sorted(topic.resource_types):
                pairs = filter_pairs(topic, loaded.config, resource_type)
                if pairs is not None:
                    self._add(resource_type, Candidate(loaded, topic, pairs))

    def _add(self, resource_type: str, candidate: Candidate) -> None:
        found = self._types.setdefault(resource_type, _ByType([], {}, [], set()))
        pairs = candidate.pairs
        assert candidate.loaded.principal is not None
        if not candidate.loaded.principal.unrestricted:
            found.searched.append(candidate)
            return
        kinds = [quick_kind(self._registry, resource_type, p, v) for p, v in pairs]
        if any(kind is None for kind in kinds):
            found.searched.append(candidate)
        elif not pairs:
            found.unfiltered.append(candidate)
        else:
            param, value = pairs[0]
            kind = kinds[0]
            assert kind is not None
            found.keyed.setdefault((param, quick_key(kind, value)), []).append(candidate)
            found.params.update(p for p, _ in pairs)

    def params(self, resource_type: str) -> frozenset[str]:
        """The search parameters whose index values decide the Subscriptions of
        `resource_type` that are decided without a search."""
        found = self._types.get(resource_type)
        return frozenset(found.params) if found is not None else frozenset()

    def candidates(
        self, resource_type: str, keys: Callable[[set[str]], set[tuple[str, str]]]
    ) -> list[Candidate]:
        """The Subscriptions an event of `resource_type` may concern; `keys(params)` gives
        the event's (parameter, key) index values of those parameters (asked for only when
        some Subscription is keyed by one)."""
        found = self._types.get(resource_type)
        if found is None:
            return []
        out = [*found.unfiltered, *found.searched]
        if found.keyed:
            for key in keys({param for param, _ in found.keyed}):
                out.extend(found.keyed.get(key, ()))
        return out
