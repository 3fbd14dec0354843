"""Does a change concern a Subscription? Its topic's trigger (interaction, `fhirPathCriteria`
over `%previous` and `%current`, `queryCriteria.current`) decides whether the change is an
event of the topic; the Subscription's filters, and what its creator may see, are then
checked by a search through the store as that principal (`Type?_id=X&filter=value...`), so
filters mean exactly what the same search means and access narrows as every read does.

For a principal that sees everything, plain equality filters on token, reference and uri
parameters are decided from the changed version's index values instead (the same values the
search would find, without a query); the search itself looks at the current version, and
is run once per batch of events for all the Subscriptions sharing a creator and filters
(`visible_ids`), not once per event and Subscription."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from cmfhir.auth.principal import Principal
from cmfhir.errors import FhirError
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.search_type import search
from cmfhir.resources.index_values import ResourceIndex, extract_index, extract_parameters
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.subscriptions.criteria import criteria
from cmfhir.subscriptions.model import SubscriptionConfig
from cmfhir.subscriptions.topics import Topic, Trigger

__all__ = [
    "EventCheck",
    "Pairs",
    "filter_pairs",
    "index_keys",
    "quick_key",
    "quick_kind",
    "visible",
    "visible_ids",
]

log = logging.getLogger(__name__)

# A Subscription's filters on one resource type, as search parameters, sorted.
Pairs = tuple[tuple[str, str], ...]


async def visible(
    ctx: FhirContext,
    principal: Principal,
    resource_type: str,
    id: str,
    params: Sequence[tuple[str, str]] = (),
) -> bool:
    """Whether `principal` finds the resource with a search narrowed by `params`."""
    return id in await visible_ids(ctx, principal, resource_type, [id], params)


async def visible_ids(
    ctx: FhirContext,
    principal: Principal,
    resource_type: str,
    ids: Collection[str],
    params: Sequence[tuple[str, str]] = (),
) -> set[str]:
    """Which of the resources `principal` finds with a search narrowed by `params`: one
    search (`_id=a,b,...`) per page of ids."""
    if principal.unrestricted and not params:
        return set(ids)
    wanted = sorted(set(ids))
    page = max(ctx.limits.max_count, 1)
    found: set[str] = set()
    for start in range(0, len(wanted), page):
        chunk = wanted[start : start + page]
        try:
            result = await search(
                replace(ctx, principal=principal),
                resource_type,
                [
                    ("_id", ",".join(chunk)),
                    *params,
                    ("_elements", "id"),
                    ("_count", str(len(chunk))),
                    ("_total", "none"),
                ],
                base="",
            )
        except FhirError as error:
            # A filter the search refuses (a value of the wrong form) matches nothing.
            log.warning("subscription filter search refused: %s", type(error).__name__)
            return set()
        body = result.body
        entries = body.get("entry", []) if isinstance(body, dict) else []
        found.update(
            str(e["resource"]["id"])
            for e in entries
            if e.get("search", {}).get("mode", "match") == "match"
        )
    return found


def filter_pairs(topic: Topic, config: SubscriptionConfig, resource_type: str) -> Pairs | None:
    """The Subscription's filters on `resource_type` as the search parameters the topic maps
    them to, sorted; None when one names no filter of the topic (then nothing of that type
    concerns the Subscription)."""
    pairs: list[tuple[str, str]] = []
    for filtered_type, filters in config.filters:
        if filtered_type != resource_type:
            continue
        for name, value in filters:
            mapped = topic.filters.get(name)
            if mapped is None:
                return None
            pairs.append((mapped[1], value))
    return tuple(sorted(pairs))


def quick_kind(
    registry: SearchParameterRegistry, resource_type: str, param: str, value: str
) -> str | None:
    """`token`, `reference` or `uri` when the filter is a plain equality decided from the
    changed version's own index values; None when it needs the search (a chain, `_has`, a
    modifier, an OR list, another parameter type)."""
    if ":" in param or "." in param or param.startswith("_") or "," in value:
        return None
    definition = registry.for_type(resource_type).get(param)
    if definition is None or definition.type not in ("token", "reference", "uri"):
        return None
    return definition.type


def quick_key(kind: str, value: str) -> str:
    """What an index value of the filter's parameter has, at least, when the filter holds:
    a reference's id, a token's code, the uri (`index_keys` gives the same of a version)."""
    if kind == "reference":
        return value.rpartition("/")[2]
    if kind == "token":
        return value.rpartition("|")[2]
    return value


def index_keys(index: ResourceIndex, params: Collection[str]) -> set[tuple[str, str]]:
    """(parameter, key) of a version's index values of `params`, as `quick_key` makes them
    of filter values."""
    keys: set[tuple[str, str]] = set()
    for token in index.token:
        if token.param in params:
            keys.add((token.param, token.code or ""))
    for reference in index.reference:
        if reference.param in params:
            if reference.target_id is not None:
                keys.add((reference.param, reference.target_id))
            keys.add((reference.param, reference.url.rpartition("/")[2]))
    for uri in index.uri:
        if uri.param in params:
            keys.add((uri.param, uri.uri))
    return keys


def _holds(index: ResourceIndex, kind: str, param: str, value: str) -> bool:
    """A quick filter (`quick_kind`) decided on the version's index values."""
    if kind == "reference":
        target_type, _, id = value.rpartition("/")
        return any(
            r.url == value
            or (r.target_id == id and (not target_type or r.target_type == target_type))
            for r in index.reference
            if r.param == param
        )
    if kind == "uri":
        return any(u.uri == value for u in index.uri if u.param == param)
    system, bar, code = value.rpartition("|")
    return any(
        t.code == code and (not bar or (t.system or "") == system)
        for t in index.token
        if t.param == param
    )


class EventCheck:
    """The checks of one outbox event, each computed once for all Subscriptions."""

    def __init__(
        self,
        ctx: FhirContext,
        resource_type: str,
        id: str,
        method: str,
        current: dict[str, Any] | None,
        previous: dict[str, Any] | None,
        params: Collection[str] | None = None,
    ) -> None:
        self.ctx = ctx
        # The parameters whose index values are asked for (None: every parameter).
        self.params = params
        self.resource_type = resource_type
        self.id = id
        self.method = method
        self.current = current
        self.previous = previous
        self._triggers: dict[str, bool] = {}
        self._index: ResourceIndex | None = None
        self._searches: dict[tuple[Principal, Pairs], bool] = {}

    async def topic_fires(self, topic: Topic) -> bool:
        if topic.url not in self._triggers:
            fired = False
            for trigger in topic.triggers_for(self.resource_type, self.method):
                if await self._fires(trigger):
                    fired = True
                    break
            self._triggers[topic.url] = fired
        return self._triggers[topic.url]

    async def _fires(self, trigger: Trigger) -> bool:
        if trigger.fhirpath and not criteria(trigger.fhirpath).fires(self.current, self.previous):
            return False
        if trigger.query_current:
            pairs = tuple(parse_qsl(trigger.query_current.partition("?")[2]))
            key = (Principal("trusted"), pairs)
            if key not in self._searches:
                self._searches[key] = await visible(
                    self.ctx, key[0], self.resource_type, self.id, pairs
                )
            if not self._searches[key]:
                return False
        return True

    def index(self) -> ResourceIndex:
        """The changed version's index values (of `params`, or all; extracted once, when
        first asked for)."""
        if self._index is None:
            assert self.current is not None
            registry = self.ctx.registry
            self._index = (
                extract_index(self.current, registry)
                if self.params is None
                else extract_parameters(self.current, registry, self.params)
            )
        return self._index

    def keys(self, params: Iterable[str]) -> set[tuple[str, str]]:
        """`index_keys` of the changed version (none for a deletion)."""
        if self.current is None:
            return set()
        return index_keys(self.index(), set(params))

    def decide(self, pairs: Pairs, principal: Principal) -> bool | None:
        """Whether the event, already one of the topic's, passes these filters and is
        visible to the principal, when that can be told without a search; None when it
        takes one (`visible_ids`, as the principal, with `pairs`)."""
        if self.current is None:
            # A deletion: nothing left to search; filters cannot be checked.
            return not pairs and principal.unrestricted
        if not principal.unrestricted:
            return None
        registry = self.ctx.registry
        kinds = [quick_kind(registry, self.resource_type, param, value) for param, value in pairs]
        if any(kind is None for kind in kinds):
            return None
        return all(
            _holds(self.index(), kind, param, value)
            for kind, (param, value) in zip(kinds, pairs, strict=True)
            if kind is not None
        )
