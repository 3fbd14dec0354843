"""Wiring subscriptions into a FhirContext: topics loaded, the sealing key found, and the
write hook, CapabilityStatement extension and operations added."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from cmfhir.auth.principal import TRUSTED
from cmfhir.errors import FhirError
from cmfhir.interactions import update
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import SubscriptionRows
from cmfhir.subscriptions.feature import SubscriptionFeature
from cmfhir.subscriptions.sealing import Sealer
from cmfhir.subscriptions.topics import TopicRegistry, load_topics
from cmfhir.subscriptions.validation import EndpointPolicy

__all__ = ["open_subscriptions"]

log = logging.getLogger(__name__)


async def _publish_topics(ctx: FhirContext, topics: TopicRegistry) -> None:
    """The topics stored as R4B SubscriptionTopic resources (served to clients that ask for
    4.3), written when missing or changed; racing processes agree on the same content."""
    writer = replace(ctx, principal=TRUSTED).for_request("4.3")
    for topic in topics.all():
        content = topic.content
        async with ctx.store.transaction(read_only=True, principal=TRUSTED) as repo:
            found = await repo.read("SubscriptionTopic", content["id"])
        if found is not None and not found.deleted and found.content is not None:
            stored = parse_json(found.content)
            stored.pop("meta", None)
            if stored == content:
                continue
        try:
            await update(writer, "SubscriptionTopic", content["id"], dict(content))
        except FhirError as error:
            log.warning("topic %s not stored: %s", content["id"], error.diagnostics)


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
        async with ctx.store.transaction(principal=TRUSTED) as repo:
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
    await _publish_topics(ctx, topics)
    return replace(
        ctx,
        write_hooks={**ctx.write_hooks, **feature.write_hooks()},
        capability_hooks=(*ctx.capability_hooks, feature.capability_hook),
        implementations={**ctx.implementations, **feature.implementations()},
        subscriptions=feature,
    )
