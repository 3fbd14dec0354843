"""A Subscription's numbered notifications as notification events: each with its focus
resource when the Subscription's creator may still see it, checked at the time of sending
(or replaying) as that creator, by one search per resource type of the batch."""

from __future__ import annotations

from typing import Any

from cmfhir.auth.principal import TRUSTED
from cmfhir.interactions.context import FhirContext
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store import Repository, SubscriptionRows
from cmfhir.subscriptions.feature import Loaded
from cmfhir.subscriptions.matching import visible_ids
from cmfhir.subscriptions.notifications import Focus

__all__ = ["foci", "version_content"]


async def version_content(
    repo: Repository, resource_type: str, id: str, version: int
) -> dict[str, Any] | None:
    found = await repo.vread(resource_type, id, version)
    if found is None or found.deleted or found.content is None:
        return None
    content: dict[str, Any] = parse_json(found.content)
    return content


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
    config = loaded.config
    content = content or config.content
    notes = await SubscriptionRows(repo.conn).notifications(config.id, first, last, limit)
    # What the creator may see now: one search per focus type of the batch.
    seen: set[tuple[str, str]] = set()
    if loaded.principal is not None:
        by_type: dict[str, set[str]] = {}
        for note in notes:
            by_type.setdefault(note.focus_type, set()).add(note.focus_id)
        for focus_type, ids in sorted(by_type.items()):
            found = await visible_ids(ctx, loaded.principal, focus_type, ids)
            seen.update((focus_type, id) for id in found)
    out = []
    for note in notes:
        shown = (note.focus_type, note.focus_id) in seen
        if not shown or content == "empty":
            out.append(Focus(note.event_number, note.occurred_at))
            continue
        resource = None
        if content == "full-resource" and note.method != "delete":
            resource = await version_content(
                repo, note.focus_type, note.focus_id, note.focus_version
            )
        out.append(
            Focus(
                note.event_number,
                note.occurred_at,
                note.focus_type,
                note.focus_id,
                note.method,
                resource,
            )
        )
    return out
