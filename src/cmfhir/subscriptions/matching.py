"""Does a change concern a Subscription? Its topic's trigger (interaction, `fhirPathCriteria`
over `%previous` and `%current`, `queryCriteria.current`) decides whether the change is an
event of the topic; the Subscription's filters, and what its creator may see, are then
checked by a search through the store as that principal (`Type?_id=X&filter=value...`), so
filters mean exactly what the same search means and access narrows as every read does.

For a principal that sees everything, plain equality filters on token, reference and uri
parameters are decided from the changed version's index values instead (the same values the
search would find, without a query per Subscription); the search itself looks at the
current version."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from cmfhir.auth.principal import Principal
from cmfhir.errors import FhirError
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.search_type import search
from cmfhir.resources.index_values import ResourceIndex, extract_index
from cmfhir.subscriptions.model import SubscriptionConfig
from cmfhir.subscriptions.topics import Topic, Trigger

__all__ = ["EventCheck", "visible"]

log = logging.getLogger(__name__)

_MODEL = fhirpath_models["r4"]


@functools.lru_cache(maxsize=256)
def _compiled(expression: str) -> Callable[[Any, Any], Any]:
    """A topic's expression parsed once (parsing costs ~100 times evaluating)."""
    return fhirpathpy.compile(expression, _MODEL)


async def visible(
    ctx: FhirContext,
    principal: Principal,
    resource_type: str,
    id: str,
    params: Sequence[tuple[str, str]] = (),
) -> bool:
    """Whether `principal` finds the resource with a search narrowed by `params`."""
    if principal.unrestricted and not params:
        return True
    try:
        result = await search(
            replace(ctx, principal=principal),
            resource_type,
            [("_id", id), *params, ("_summary", "count")],
            base="",
        )
    except FhirError as error:
        # A filter the search refuses (a value of the wrong form) matches nothing.
        log.warning("subscription filter search refused: %s", type(error).__name__)
        return False
    body = result.body
    return isinstance(body, dict) and bool(body.get("total"))


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
    ) -> None:
        self.ctx = ctx
        self.resource_type = resource_type
        self.id = id
        self.method = method
        self.current = current
        self.previous = previous
        self._triggers: dict[str, bool] = {}
        self._index: ResourceIndex | None = None
        self._searches: dict[tuple[Principal, tuple[tuple[str, str], ...]], bool] = {}

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
        if trigger.fhirpath:
            environment: dict[str, Any] = {
                "previous": self.previous or [],
                "current": self.current or [],
            }
            try:
                value = _compiled(trigger.fhirpath)(self.current or {}, environment)
            except Exception as error:
                log.warning("topic fhirPathCriteria failed: %s", type(error).__name__)
                return False
            if value != [True]:
                return False
        if trigger.query_current:
            pairs = tuple(parse_qsl(trigger.query_current.partition("?")[2]))
            if not await self._search(Principal("trusted"), pairs):
                return False
        return True

    async def concerns(
        self, topic: Topic, config: SubscriptionConfig, principal: Principal
    ) -> bool:
        """Whether the event, already one of `topic`'s, passes the Subscription's filters
        and is visible to its creator."""
        pairs: list[tuple[str, str]] = []
        for resource_type, filters in config.filters:
            if resource_type != self.resource_type:
                continue
            for name, value in filters:
                mapped = topic.filters.get(name)
                if mapped is None:
                    return False
                pairs.append((mapped[1], value))
        if self.current is None:
            # A deletion: nothing left to search; filters cannot be checked.
            return not pairs and principal.unrestricted
        if principal.unrestricted:
            decided = [self._quick(param, value) for param, value in pairs]
            if all(d is not None for d in decided):
                return all(decided)
        return await self._search(principal, tuple(sorted(pairs)))

    def _quick(self, param: str, value: str) -> bool | None:
        """A filter decided from the changed version's own index values, without a search:
        a plain token, reference or uri parameter compared for equality. None when it needs
        the search (a chain, `_has`, a modifier, an OR list, another parameter type)."""
        if ":" in param or "." in param or param.startswith("_") or "," in value:
            return None
        definition = self.ctx.registry.for_type(self.resource_type).get(param)
        if definition is None or definition.type not in ("token", "reference", "uri"):
            return None
        if self._index is None:
            assert self.current is not None
            self._index = extract_index(self.current, self.ctx.registry)
        index = self._index
        if definition.type == "reference":
            kind, _, id = value.rpartition("/")
            return any(
                r.url == value or (r.target_id == id and (not kind or r.target_type == kind))
                for r in index.reference
                if r.param == param
            )
        if definition.type == "uri":
            return any(u.uri == value for u in index.uri if u.param == param)
        system, bar, code = value.rpartition("|")
        return any(
            t.code == code and (not bar or (t.system or "") == system)
            for t in index.token
            if t.param == param
        )

    async def _search(self, principal: Principal, pairs: tuple[tuple[str, str], ...]) -> bool:
        key = (principal, pairs)
        if key not in self._searches:
            self._searches[key] = await visible(
                self.ctx, principal, self.resource_type, self.id, pairs
            )
        return self._searches[key]
