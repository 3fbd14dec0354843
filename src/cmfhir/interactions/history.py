"""history at instance, type and system level (https://hl7.org/fhir/R4B/http.html#history):
newest first, paged with a keyset cursor, `_since`, `_at` and `_count`.

Every answer is the history up to a watermark (store/history.py), which the Bundle states
as `meta.lastUpdated`: a client following the server sends it as its next `_since` and
sees each version exactly once (docs/history.md). `_at` gives, per resource, the version
current at that instant (each version current during the period, for a coarser date).
"""

from __future__ import annotations

from datetime import datetime

from cmfhir.errors import NotFound
from cmfhir.interactions.audit_history import AUDIT_EVENT, audit_history
from cmfhir.interactions.bundles import history_bundle, link
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result, instant
from cmfhir.interactions.history_params import decode_cursor, encode_cursor, history_params

__all__ = ["history"]


# How long a `_since` answer waits for the write transactions running when it is asked.
_SETTLE_S = 2.0
Cursor = tuple[tuple[datetime, int, int], datetime]  # (stamp, rid, version), watermark


async def history(
    ctx: FhirContext,
    resource_type: str | None,
    id: str | None,
    params: list[tuple[str, str]],
    *,
    base: str,
) -> Result:
    if resource_type is not None:
        require_type(resource_type, ctx.fhir_version)
    if id is not None:
        check_id(id)
    if resource_type == AUDIT_EVENT:
        return await audit_history(ctx, id, params, base=base)
    asked = history_params(params, ctx.limits.default_count, ctx.limits.max_count)
    since, at, count, echo = asked.since, asked.at, asked.count, asked.echo
    cursor: Cursor | None = None
    if asked.cursor is not None:
        lu, rid, version, until = decode_cursor(asked.cursor, (datetime, int, int, datetime))
        cursor = (lu, rid, version), until
    total: int | None = None
    async with ctx.store.transaction(principal=ctx.principal, read_only=True) as repo:
        if id is not None and resource_type is not None:
            found = await repo.read(resource_type, id)
            if found is None:
                raise NotFound(f"{resource_type}/{id} is not known")
            # Versions run 1..n, so an instance's whole history is its current version.
            total = found.version if since is None and at is None else None
        # Later pages keep the first page's bound, so the pages add up to one answer. With
        # `_since` the answer is a follow and ends at the watermark. Without it, it ends now,
        # so a client sees its own last write even while other transactions (the background
        # workers') run; the watermark is still what it states as where to follow on from.
        if cursor is not None:
            until = stated = cursor[1]
        else:
            # A follow waits (briefly) for the writes running now, so that it holds the
            # client's own writes beside the background workers' short transactions.
            settle = _SETTLE_S if since is not None else 0.0
            stated = await repo.history_watermark(follow=True, settle=settle)
            until = stated if since is not None else await repo.history_watermark(follow=False)
        page = await repo.history(
            resource_type=resource_type,
            id=id,
            since=since,
            at=at,
            until=until,
            count=count,
            cursor=None if cursor is None else cursor[0],
        )
    if total is None and cursor is None and page.next_cursor is None:
        total = len(page.versions)  # the first page holds them all
    path = "/".join(p for p in (resource_type, id, "_history") if p)
    links = {"self": link(base, path, echo)}
    if page.next_cursor is not None:
        links["next"] = link(
            base, path, [*echo, ("_cursor", encode_cursor(*page.next_cursor, until))]
        )
    bundle = history_bundle(base, page.versions, links, total=total)
    # The watermark is where a follower goes on from (never before the `_since` it sent:
    # the watermark may fall back while a transaction that started earlier writes).
    complete_to = stated if since is None else max(stated, since)
    return Result(
        200,
        {"resourceType": bundle.pop("resourceType"), "meta": {"lastUpdated": instant(complete_to)}}
        | bundle,
    )
