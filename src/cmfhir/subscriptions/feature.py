"""Subscriptions as the server wires them: the topics, the sealing key, the endpoint policy,
and what they add to the FhirContext (the Subscription write hook, the CapabilityStatement
extension, the operations)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import Repository
from cmfhir.subscriptions.model import SubscriptionConfig, read_config
from cmfhir.subscriptions.sealing import Sealer
from cmfhir.subscriptions.topics import TopicRegistry
from cmfhir.subscriptions.validation import EndpointPolicy, SubscriptionCheck

__all__ = ["TOPIC_CANONICAL", "Loaded", "SubscriptionFeature"]

TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)


@dataclass(frozen=True, slots=True)
class Loaded:
    config: SubscriptionConfig
    # The creator's principal and the channel headers; None when the seal cannot be opened
    # (then nothing is delivered: fail closed).
    principal: Principal | None
    headers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionFeature:
    topics: TopicRegistry
    sealer: Sealer
    policy: EndpointPolicy
    # The public base URL for references in notifications (None: relative references).
    base: str | None = None
    # How long a failing endpoint is retried before the Subscription goes to `error`.
    retry_window: timedelta = timedelta(hours=24)
    # How long a websocket binding token is accepted.
    token_ttl_s: int = 300

    def write_hooks(self) -> dict[str, Callable[[Any, dict[str, Any], str], dict[str, Any]]]:
        return {"Subscription": SubscriptionCheck(self.topics, self.sealer, self.policy)}

    def capability_hook(self, statement: dict[str, Any]) -> dict[str, Any]:
        """The backport's CapabilityStatement extension: each topic's canonical on the
        Subscription resource entry."""
        out = dict(statement)
        rest = [dict(r) for r in out.get("rest", [])]
        for part in rest:
            resources = []
            for entry in part.get("resource", []):
                if entry.get("type") == "Subscription":
                    entry = copy.deepcopy(entry)
                    entry["extension"] = [
                        *entry.get("extension", []),
                        *(
                            {"url": TOPIC_CANONICAL, "valueCanonical": t.url}
                            for t in self.topics.all()
                        ),
                    ]
                    entry["supportedProfile"] = [
                        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                        "backport-subscription"
                    ]
                resources.append(entry)
            part["resource"] = resources
        out["rest"] = rest
        return out

    def implementations(self) -> dict[str, Callable[[Any, Any], Awaitable[Any]]]:
        from cmfhir.subscriptions import operations

        return operations.implementations(self)

    async def load(self, repo: Repository, subscription_id: str) -> Loaded | None:
        """The Subscription as stored now, or None when it is gone."""
        found = await repo.read("Subscription", subscription_id)
        if found is None or found.deleted or found.content is None:
            return None
        return self.loaded(subscription_id, found.content)

    def loaded(self, subscription_id: str, content: str | bytes) -> Loaded:
        """A stored Subscription's settings, with its seal opened (JSON text of its
        current version)."""
        config = read_config(parse_json(content))
        sealed = self.sealer.open(config.sealed, subscription_id, config.endpoint)
        return Loaded(
            config,
            sealed.principal if sealed else None,
            sealed.headers if sealed else (),
        )
