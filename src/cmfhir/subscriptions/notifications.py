"""Notification Bundles (R5 Backport IG 1.1.0, "Notifications"): a `history` Bundle whose
first entry is the subscription status, a Parameters resource of the
`backport-subscription-status-r4` profile, followed by the focus resources (full-resource)
or their URLs (id-only). The same shape answers handshakes, heartbeats, `$events` and
`$status` (a searchset of the status Parameters alone)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cmfhir.interactions.context import instant

__all__ = ["Focus", "notification_bundle", "status_parameters"]

_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
STATUS_PROFILE = _PROFILE + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = _PROFILE + "backport-subscription-notification-r4"
_RESPONSE = {"create": "201", "update": "200", "delete": "204"}
_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}


@dataclass(frozen=True, slots=True)
class Focus:
    """One notification event: its number, when it happened, and the resource (None when
    it is not shown: `empty` content, or no longer visible to the subscriber)."""

    event_number: int
    occurred_at: datetime
    resource_type: str | None = None
    id: str | None = None
    method: str = "update"
    content: dict[str, Any] | None = None


def _url(base: str | None, path: str) -> str:
    return f"{base}/{path}" if base else path


def status_parameters(
    *,
    base: str | None,
    subscription_id: str,
    topic: str,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[Focus] = (),
    error: str | None = None,
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": "subscription",
            "valueReference": {"reference": _url(base, f"Subscription/{subscription_id}")},
        },
        {"name": "topic", "valueCanonical": topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.event_number)},
            {"name": "timestamp", "valueInstant": instant(event.occurred_at)},
        ]
        if event.resource_type is not None:
            parts.append(
                {
                    "name": "focus",
                    "valueReference": {
                        "reference": _url(base, f"{event.resource_type}/{event.id}")
                    },
                }
            )
        parameters.append({"name": "notification-event", "part": parts})
    if error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification_bundle(
    status: dict[str, Any],
    *,
    base: str | None,
    subscription_id: str,
    now: datetime,
    events: Sequence[Focus] = (),
    content: str = "id-only",
) -> dict[str, Any]:
    first: dict[str, Any] = {
        "fullUrl": f"urn:uuid:{status['id']}",
        "resource": status,
        "request": {"method": "GET", "url": _url(base, f"Subscription/{subscription_id}/$status")},
        "response": {"status": "200"},
    }
    entries = [first]
    if content != "empty":
        for event in events:
            if event.resource_type is None:
                continue
            path = f"{event.resource_type}/{event.id}"
            entry: dict[str, Any] = {}
            if base:
                entry["fullUrl"] = f"{base}/{path}"
            if content == "full-resource" and event.content is not None:
                entry["resource"] = event.content
            entry["request"] = {
                "method": _METHOD.get(event.method, "PUT"),
                "url": event.resource_type if event.method == "create" else path,
            }
            entry["response"] = {"status": _RESPONSE.get(event.method, "200")}
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": instant(now),
        "entry": entries,
    }
