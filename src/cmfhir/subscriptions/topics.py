"""The subscription topics the server publishes: `profiles/content/SubscriptionTopic-*.json`
(R4B SubscriptionTopic, https://hl7.org/fhir/R4B/subscriptiontopic.html), read at start.

A topic is data: its `resourceTrigger`s (resource type, interactions, `fhirPathCriteria`
over `%previous` and `%current`, or `queryCriteria.current` as a search) decide which
changes it reports, and its `canFilterBy` entries name the filters a Subscription may use,
each mapped to a search parameter (`filterDefinition`, a SearchParameter canonical) or to a
search expression (the `filter-search` extension, e.g. a chain).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmfhir.resources.search_parameters import SearchParameterRegistry

__all__ = ["FILTER_SEARCH", "Topic", "TopicRegistry", "Trigger", "load_topics"]

FILTER_SEARCH = "https://cmfhir.org/fhir/StructureDefinition/filter-search"
_CORE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True, slots=True)
class Trigger:
    resource_type: str
    interactions: frozenset[str]  # create | update | delete
    fhirpath: str | None
    # queryCriteria.current: a search the resource must match after the change
    query_current: str | None


@dataclass(frozen=True, slots=True)
class Topic:
    url: str
    version: str | None
    title: str
    triggers: tuple[Trigger, ...]
    # filter name -> (resource type, search parameter or chain it is evaluated as)
    filters: dict[str, tuple[str, str]]
    content: dict[str, Any]

    def triggers_for(self, resource_type: str, interaction: str) -> list[Trigger]:
        return [
            t
            for t in self.triggers
            if t.resource_type == resource_type and interaction in t.interactions
        ]

    @property
    def resource_types(self) -> set[str]:
        return {t.resource_type for t in self.triggers}


class TopicRegistry:
    def __init__(self, topics: list[Topic]) -> None:
        self._by_url = {t.url: t for t in topics}

    def get(self, canonical: str) -> Topic | None:
        """The topic a canonical names (`url` or `url|version`)."""
        url, _, version = canonical.partition("|")
        topic = self._by_url.get(url)
        if topic is None or (version and topic.version and version != topic.version):
            return None
        return topic

    def all(self) -> list[Topic]:
        return sorted(self._by_url.values(), key=lambda t: t.url)

    def resource_types(self) -> set[str]:
        return {rt for t in self._by_url.values() for rt in t.resource_types}


def _resource_type(uri: str) -> str:
    return uri.removeprefix(_CORE)


def _filter(entry: dict[str, Any], registry: SearchParameterRegistry, source: Path) -> str:
    for extension in entry.get("extension", []):
        if extension.get("url") == FILTER_SEARCH and isinstance(extension.get("valueString"), str):
            return str(extension["valueString"])
    definition = entry.get("filterDefinition")
    resource_type = _resource_type(entry.get("resource", ""))
    if isinstance(definition, str):
        for code, param in registry.for_type(resource_type).items():
            if param.url == definition:
                return code
        raise ValueError(f"{source}: filter definition {definition} is not a search parameter")
    name = entry.get("filterParameter")
    if name in registry.for_type(resource_type):
        return str(name)
    raise ValueError(f"{source}: filter '{name}' maps to no search parameter of {resource_type}")


def _topic(content: dict[str, Any], registry: SearchParameterRegistry, source: Path) -> Topic:
    if content.get("resourceType") != "SubscriptionTopic" or not content.get("url"):
        raise ValueError(f"{source} is not a SubscriptionTopic with a url")
    triggers = []
    for trigger in content.get("resourceTrigger", []):
        query = trigger.get("queryCriteria") or {}
        if query.get("previous"):
            raise ValueError(
                f"{source}: queryCriteria.previous is not supported; use fhirPathCriteria"
            )
        triggers.append(
            Trigger(
                resource_type=_resource_type(trigger["resource"]),
                interactions=frozenset(trigger.get("supportedInteraction") or ("create", "update")),
                fhirpath=trigger.get("fhirPathCriteria"),
                query_current=query.get("current"),
            )
        )
    filters = {
        entry["filterParameter"]: (
            _resource_type(entry.get("resource", "")),
            _filter(entry, registry, source),
        )
        for entry in content.get("canFilterBy", [])
    }
    return Topic(
        url=content["url"],
        version=content.get("version"),
        title=content.get("title") or content["url"],
        triggers=tuple(triggers),
        filters=filters,
        content=content,
    )


def load_topics(profiles_dir: Path, registry: SearchParameterRegistry) -> TopicRegistry:
    sources = sorted((profiles_dir / "content").glob("SubscriptionTopic-*.json"))
    return TopicRegistry(
        [_topic(json.loads(p.read_text(encoding="utf-8")), registry, p) for p in sources]
    )
