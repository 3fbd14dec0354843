"""history at instance, type and system level (https://hl7.org/fhir/R4B/http.html#history):
newest first, paged with a keyset cursor, `_since`, `_at` and `_count`.

Every answer is the history up to a watermark (store/history.py), which the Bundle states
as `meta.lastUpdated`: a client following the server sends it as its next `_since` and
sees each version exactly once (docs/history.md). `_at` gives, per resource, the version
current at that instant (each version current during the period, for a coarser date).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from cmfhir.errors import BadRequest, NotFound
from cmfhir.interactions.audit_history import AUDIT_EVENT, audit_history
from cmfhir.interactions.bundles import history_bundle, link
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result, instant
from cmfhir.resources.index_values import date_range
from cmfhir.search.parse import parse_instant

__all__ = ["history"]


# How long a `_since` answer waits for the write transactions running when it is asked.
_SETTLE_S = 2.0
Cursor = tuple[tuple[datetime, int, int], datetime]  # (stamp, rid, version), watermark


def _encode(cursor: Cursor) -> str:
    (lu, rid, version), until = cursor
    raw = json.dumps([lu.isoformat(), rid, version, until.isoformat()]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> Cursor:
    # A forged cursor fails in any of these ways: not base64 or JSON, another shape, `1e999`
    # (int(inf) overflows), a time without a zone, or nested past the JSON decoder's
    # recursion limit.
    try:
        lu, rid, version, until = json.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
        moments = datetime.fromisoformat(lu), datetime.fromisoformat(until)
        if any(m.tzinfo is None for m in moments):
            raise ValueError("cursor time without a zone")
        return (moments[0], int(rid), int(version)), moments[1]
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error


def _at(name: str, value: str) -> tuple[datetime, datetime]:
    parse_instant(name, value)  # the same checks and message as `_since`
    return date_range(value)


def _count(value: str, max_count: int) -> int:
    # isascii: isdigit() also takes digits int() refuses (`²`); a number of thousands of
    # digits int() refuses too, and it is past the cap anyway.
    digits = value.lstrip("0")
    if not (value.isascii() and value.isdigit()) or not digits:
        raise BadRequest(f"_count '{value}' must be a positive integer", expression=["_count"])
    if len(digits) > len(str(max_count)):
        return max_count
    return min(int(digits), max_count)


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
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    cursor: Cursor | None = None
    count = ctx.limits.default_count
    echo: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_cursor":
            cursor = _decode(value)
            continue
        echo.append((name, value))
        if name == "_since":
            since = parse_instant(name, value)
        elif name == "_at":
            at = _at(name, value)
        elif name == "_count":
            count = _count(value, ctx.limits.max_count)
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
        links["next"] = link(base, path, [*echo, ("_cursor", _encode((page.next_cursor, until)))])
    bundle = history_bundle(base, page.versions, links, total=total)
    # The watermark is where a follower goes on from (never before the `_since` it sent:
    # the watermark may fall back while a transaction that started earlier writes).
    complete_to = stated if since is None else max(stated, since)
    return Result(
        200,
        {"resourceType": bundle.pop("resourceType"), "meta": {"lastUpdated": instant(complete_to)}}
        | bundle,
    )
