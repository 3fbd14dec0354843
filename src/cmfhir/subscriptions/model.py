"""A Subscription as the R5 Backport IG 1.1.0 profiles it on R4
(http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription):
`criteria` is the topic's canonical, filters are `backport-filter-criteria` extensions on it,
and the channel carries heartbeat, timeout, max count and payload content extensions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "BACKPORT",
    "CONTENTS",
    "SEALED",
    "SubscriptionConfig",
    "ext_url",
    "filter_criteria",
    "read_config",
]

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
# Channel headers and the creator's principal, sealed (subscriptions/sealing.py).
SEALED = "https://cmfhir.org/fhir/StructureDefinition/subscription-sealed"
CONTENTS = ("empty", "id-only", "full-resource")


def ext_url(name: str) -> str:
    return BACKPORT + name


def _extension(holder: dict[str, Any] | None, url: str) -> dict[str, Any] | None:
    for extension in (holder or {}).get("extension", []) or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            return extension
    return None


def filter_criteria(resource: dict[str, Any]) -> list[str]:
    """The `backport-filter-criteria` values (`Encounter?patient=Patient/1&class=IMP`)."""
    holder = resource.get("_criteria")
    out = []
    for extension in (holder or {}).get("extension", []) or []:
        if isinstance(extension, dict) and extension.get("url") == ext_url(
            "backport-filter-criteria"
        ):
            value = extension.get("valueString")
            out.append(value if isinstance(value, str) else "")
    return out


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    id: str
    status: str
    topic: str
    # (resource type, [(parameter, value)]) per filter criteria extension
    filters: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    channel: str
    endpoint: str | None
    payload: str | None
    content: str
    heartbeat_s: int | None
    timeout_s: int | None
    max_count: int | None
    sealed: str | None

    @property
    def filter_resource_types(self) -> set[str]:
        return {resource_type for resource_type, _ in self.filters}


def split_criteria(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    resource_type, _, query = value.partition("?")
    return resource_type, tuple(parse_qsl(query, keep_blank_values=True))


def read_config(resource: dict[str, Any]) -> SubscriptionConfig:
    """The settings of a stored (already validated) Subscription."""
    channel = resource.get("channel") or {}

    def number(name: str) -> int | None:
        found = _extension(channel, ext_url(name))
        if found is None:
            return None
        value = found.get("valueUnsignedInt", found.get("valuePositiveInt"))
        return value if isinstance(value, int) else None

    content = _extension(channel.get("_payload"), ext_url("backport-payload-content"))
    sealed = _extension(channel, SEALED)
    return SubscriptionConfig(
        id=str(resource.get("id")),
        status=str(resource.get("status")),
        topic=str(resource.get("criteria")),
        filters=tuple(split_criteria(v) for v in filter_criteria(resource)),
        channel=str(channel.get("type") or ""),
        endpoint=channel.get("endpoint"),
        payload=channel.get("payload"),
        content=str(content.get("valueCode")) if content else "id-only",
        heartbeat_s=number("backport-heartbeat-period"),
        timeout_s=number("backport-timeout"),
        max_count=number("backport-max-count"),
        sealed=str(sealed.get("valueString")) if sealed else None,
    )
