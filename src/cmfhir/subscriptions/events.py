"""Subscriptions' numbered notifications as notification events: each with its focus resource
when the Subscription's creator may still see it, checked at the time of sending (or
replaying) as that creator. For a batch of Subscriptions at once (a sender's round): one
search per creator and resource type, and one query for the versions a `full-resource`
payload carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cmfhir.auth.principal import TRUSTED, Principal
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import Repository, SubscriptionRows
from cmfhir.store.subscriptions import Notification
from cmfhir.subscriptions.feature import Loaded
from cmfhir.subscriptions.matching import visible_ids
from cmfhir.subscriptions.notifications import Focus

__all__ = ["Batch", "foci", "foci_of"]

# One Subscription's notifications to show, with the payload content to show them with.
Batch = tuple[Loaded, Sequence[Notification], str]


async def foci(
    ctx: FhirContext,
    loaded: Loaded,
    first: int,
    last: int | None,
    limit: int,
    content: str = "",
    repo: Repository | None = None,
) -> list[Focus]:
    """Notifications `first`..`last` (at most `limit`), in order. `content` overrides the
    Subscription's payload content (`$events` takes it as a hint). Read in `repo`'s
    transaction when given."""
    if repo is None:
        async with ctx.store.transaction(read_only=True, principal=TRUSTED) as own:
            return await foci(ctx, loaded, first, last, limit, content, own)
    notes = await SubscriptionRows(repo.conn).notifications(loaded.config.id, first, last, limit)
    return (await foci_of(ctx, [(loaded, notes, content or loaded.config.content)], repo))[0]


async def foci_of(
    ctx: FhirContext, batches: Sequence[Batch], repo: Repository | None = None
) -> list[list[Focus]]:
    """The events of each batch, in its order: what each creator may see now found by one
    search per (creator, resource type) over all the batches, and the versions to carry
    read in one query."""
    wanted: dict[tuple[Principal, str], set[str]] = {}
    for loaded, notes, _ in batches:
        if loaded.principal is None:
            continue
        for note in notes:
            wanted.setdefault((loaded.principal, note.focus_type), set()).add(note.focus_id)
    seen: set[tuple[Principal, str, str]] = set()
    for (principal, focus_type), ids in sorted(wanted.items(), key=lambda kv: repr(kv[0])):
        found = await visible_ids(ctx, principal, focus_type, ids)
        seen.update((principal, focus_type, id) for id in found)

    def shown(loaded: Loaded, note: Notification) -> bool:
        principal = loaded.principal
        return principal is not None and (principal, note.focus_type, note.focus_id) in seen

    versions = [
        (note.focus_type, note.focus_id, note.focus_version)
        for loaded, notes, content in batches
        if content == "full-resource"
        for note in notes
        if note.method != "delete" and shown(loaded, note)
    ]
    contents = await _contents(ctx, versions, repo) if versions else {}
    out = []
    for loaded, notes, content in batches:
        events = []
        for note in notes:
            if content == "empty" or not shown(loaded, note):
                events.append(Focus(note.event_number, note.occurred_at))
                continue
            resource: dict[str, Any] | None = None
            if content == "full-resource" and note.method != "delete":
                text = contents.get((note.focus_type, note.focus_id, note.focus_version))
                resource = parse_json(text) if text is not None else None
            events.append(
                Focus(
                    note.event_number,
                    note.occurred_at,
                    note.focus_type,
                    note.focus_id,
                    note.method,
                    resource,
                )
            )
        out.append(events)
    return out


async def _contents(
    ctx: FhirContext, keys: list[tuple[str, str, int]], repo: Repository | None
) -> dict[tuple[str, str, int], str]:
    if repo is None:
        async with ctx.store.transaction(read_only=True, principal=TRUSTED) as own:
            return await SubscriptionRows(own.conn).version_contents(keys)
    return await SubscriptionRows(repo.conn).version_contents(keys)
