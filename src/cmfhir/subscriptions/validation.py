"""What every write of a Subscription goes through (after core validation, before it is
stored): the backport profile's rules for what cmfhir delivers, the endpoint policy (https,
loopback only in development, an allow-list against SSRF), the status a client may set, and
the channel headers and creator's principal sealed out of sight (subscriptions/sealing.py).

The server's own writes (TRUSTED: the delivery worker moving `status`) keep what is sealed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any
from urllib.parse import urlsplit

from cmfhir.errors import Unprocessable
from cmfhir.subscriptions.model import (
    CONTENTS,
    SEALED,
    ext_url,
    filter_criteria,
    read_config,
    split_criteria,
)
from cmfhir.subscriptions.sealing import Sealed, Sealer
from cmfhir.subscriptions.topics import TopicRegistry

__all__ = ["EndpointPolicy", "SubscriptionCheck"]

CHANNELS = ("rest-hook", "websocket")
PAYLOADS = ("application/fhir+json", "application/json")


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    # Host patterns (fnmatch: `*.example.org`) rest-hook endpoints may name; empty: any
    # public host over https.
    allowed_hosts: tuple[str, ...] = ()
    # Development: http:// and https:// to loopback addresses (127.0.0.1, ::1, localhost).
    allow_loopback: bool = False

    def check(self, endpoint: str) -> None:
        where = ["Subscription.channel.endpoint"]
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower()
        if not host or parts.scheme not in ("http", "https"):
            raise Unprocessable(
                f"The endpoint '{endpoint}' is not an http(s) URL", expression=where
            )
        loopback = host == "localhost" or _is_address(host, "loopback")
        if loopback:
            if not self.allow_loopback:
                raise Unprocessable(
                    "Loopback endpoints are accepted in development only "
                    "(CMFHIR_SUBSCRIPTION_ALLOW_LOOPBACK)",
                    expression=where,
                )
            return
        if parts.scheme != "https":
            raise Unprocessable("A rest-hook endpoint must use https", expression=where)
        if self.allowed_hosts:
            if not any(fnmatch(host, pattern) for pattern in self.allowed_hosts):
                raise Unprocessable(
                    f"The endpoint host '{host}' is not in the allowed list "
                    "(CMFHIR_SUBSCRIPTION_ENDPOINTS)",
                    expression=where,
                )
        elif _is_address(host, "private"):
            raise Unprocessable(
                "Endpoints on private or link-local addresses must be in the allowed list "
                "(CMFHIR_SUBSCRIPTION_ENDPOINTS)",
                expression=where,
            )


def _is_address(host: str, kind: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if kind == "loopback":
        return address.is_loopback
    return address.is_private or address.is_link_local or address.is_reserved


class SubscriptionCheck:
    """The write hook for Subscription (`FhirContext.write_hooks`)."""

    def __init__(self, topics: TopicRegistry, sealer: Sealer, policy: EndpointPolicy) -> None:
        self.topics = topics
        self.sealer = sealer
        self.policy = policy

    def __call__(self, ctx: Any, resource: dict[str, Any], id: str) -> dict[str, Any]:
        criteria = resource.get("criteria")
        topic = self.topics.get(criteria) if isinstance(criteria, str) else None
        if topic is None:
            known = ", ".join(t.url for t in self.topics.all())
            raise Unprocessable(
                f"Subscription.criteria must be the canonical URL of a topic this server "
                f"publishes ({known})",
                expression=["Subscription.criteria"],
            )
        for index, value in enumerate(filter_criteria(resource)):
            self._check_filter(topic.filters, value, index)
        channel = dict(resource.get("channel") or {})
        kind = channel.get("type")
        if kind not in CHANNELS:
            raise Unprocessable(
                f"Subscription.channel.type must be one of {', '.join(CHANNELS)}",
                expression=["Subscription.channel.type"],
            )
        self._check_payload(channel)
        endpoint = channel.get("endpoint")
        if kind == "rest-hook":
            if not isinstance(endpoint, str):
                raise Unprocessable(
                    "A rest-hook Subscription needs channel.endpoint",
                    expression=["Subscription.channel.endpoint"],
                )
            self.policy.check(endpoint)
        out = dict(resource)
        principal = ctx.principal
        if principal.kind != "trusted":
            # A client asks; the server decides when a Subscription is active (after the
            # handshake) or in error.
            out["status"] = "off" if resource.get("status") == "off" else "requested"
            out["channel"] = self._sealed_channel(channel, id, endpoint, principal)
        return out

    def _check_filter(self, filters: dict[str, tuple[str, str]], value: str, index: int) -> None:
        where = [f"Subscription.criteria.extension[{index}]"]
        resource_type, pairs = split_criteria(value)
        allowed = {name for name, (rt, _) in filters.items() if rt == resource_type}
        if not allowed or not pairs:
            raise Unprocessable(
                f"Filter criteria '{value}' must be '[type]?[filter]=[value]' for a type this "
                f"topic filters ({', '.join(sorted({rt for rt, _ in filters.values()}))})",
                expression=where,
            )
        for name, given in pairs:
            if name not in allowed or not given:
                raise Unprocessable(
                    f"'{name}' is not a filter of this topic for {resource_type} "
                    f"(filters: {', '.join(sorted(allowed))})",
                    expression=where,
                )

    def _check_payload(self, channel: dict[str, Any]) -> None:
        payload = channel.get("payload")
        if payload is not None and payload.split(";")[0].strip() not in PAYLOADS:
            raise Unprocessable(
                "Subscription.channel.payload must be application/fhir+json",
                expression=["Subscription.channel.payload"],
            )
        for extension in (channel.get("_payload") or {}).get("extension", []) or []:
            if (
                extension.get("url") == ext_url("backport-payload-content")
                and extension.get("valueCode") not in CONTENTS
            ):
                raise Unprocessable(
                    f"The payload content must be one of {', '.join(CONTENTS)}",
                    expression=["Subscription.channel.payload.extension"],
                )

    def _sealed_channel(
        self, channel: dict[str, Any], id: str, endpoint: str | None, principal: Any
    ) -> dict[str, Any]:
        headers = channel.pop("header", None)
        if headers is None:
            # Not sent again (reads never show them): keep those sealed for this endpoint.
            previous = self.sealer.open(
                read_config({"id": id, "channel": channel}).sealed, id, endpoint
            )
            headers = list(previous.headers) if previous else []
        extensions = [e for e in channel.get("extension", []) or [] if e.get("url") != SEALED]
        sealed = self.sealer.seal(id, endpoint, Sealed(tuple(headers), principal))
        extensions.append({"url": SEALED, "valueString": sealed})
        channel["extension"] = extensions
        return channel
