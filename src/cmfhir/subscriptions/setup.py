"""Wiring subscriptions into a FhirContext: topics loaded, the sealing key found, and the
write hook, CapabilityStatement extension and operations added."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from cmfhir.interactions.context import FhirContext
from cmfhir.store import SubscriptionRows
from cmfhir.subscriptions.feature import SubscriptionFeature
from cmfhir.subscriptions.sealing import Sealer
from cmfhir.subscriptions.topics import load_topics
from cmfhir.subscriptions.validation import EndpointPolicy

__all__ = ["open_subscriptions"]


async def open_subscriptions(
    ctx: FhirContext,
    *,
    profiles_dir: Path,
    key: str | None = None,
    endpoints: str = "",
    allow_loopback: bool = False,
    retry_hours: float = 24.0,
    base: str | None = None,
) -> FhirContext:
    topics = load_topics(profiles_dir, ctx.registry)
    if key:
        sealing_key = key.encode()
    else:
        async with ctx.store.transaction() as repo:
            sealing_key = await SubscriptionRows(repo.conn).sealing_key()
    feature = SubscriptionFeature(
        topics=topics,
        sealer=Sealer(sealing_key),
        policy=EndpointPolicy(
            allowed_hosts=tuple(h.strip().lower() for h in endpoints.split(",") if h.strip()),
            allow_loopback=allow_loopback,
        ),
        base=base.rstrip("/") if base else None,
        retry_window=timedelta(hours=retry_hours),
    )
    return replace(
        ctx,
        write_hooks={**ctx.write_hooks, **feature.write_hooks()},
        capability_hooks=(*ctx.capability_hooks, feature.capability_hook),
        implementations={**ctx.implementations, **feature.implementations()},
        subscriptions=feature,
    )
