"""History of AuditEvents (https://hl7.org/fhir/R4B/http.html#history), from their own
table (store/audit_events.py): an AuditEvent has one version, its create, so the history
of one is that version and the history of the type is every event, the last stored
first, with `_since`, `_at`, `_count` and paging as for other types. The Bundle's
`meta.lastUpdated` is the server's clock when the first page was read."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from cmfhir.errors import BadRequest, NotFound
from cmfhir.interactions.audit_store import AUDIT_EVENT, read_audit_event
from cmfhir.interactions.bundles import history_bundle, link
from cmfhir.interactions.context import FhirContext, Result, instant, utcnow
from cmfhir.resources.index_values import date_range
from cmfhir.search.parse import parse_instant
from cmfhir.store.audit_queries import driver_of, event_history

__all__ = ["AUDIT_EVENT", "audit_history"]


def _encode(stamp: datetime, rid: int, until: datetime) -> str:
    raw = json.dumps([stamp.isoformat(), rid, until.isoformat()]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> tuple[datetime, int, datetime]:
    try:
        stamp, rid, until = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        moments = datetime.fromisoformat(stamp), datetime.fromisoformat(until)
        if any(m.tzinfo is None for m in moments):
            raise ValueError("cursor time without a zone")
        return moments[0], int(rid), moments[1]
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error


def _count(value: str, max_count: int) -> int:
    digits = value.lstrip("0")
    if not (value.isascii() and value.isdigit()) or not digits:
        raise BadRequest(f"_count '{value}' must be a positive integer", expression=["_count"])
    if len(digits) > len(str(max_count)):
        return max_count
    return min(int(digits), max_count)


async def audit_history(
    ctx: FhirContext, id: str | None, params: list[tuple[str, str]], *, base: str
) -> Result:
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    cursor: tuple[datetime, int, datetime] | None = None
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
            parse_instant(name, value)
            at = date_range(value)
        elif name == "_count":
            count = _count(value, ctx.limits.max_count)
    path = "/".join(p for p in (AUDIT_EVENT, id, "_history") if p)
    links = {"self": link(base, path, echo)}
    until = cursor[2] if cursor is not None else utcnow()
    if id is not None:
        found = await read_audit_event(ctx.store, ctx.principal, id)
        if found is None:
            raise NotFound(f"{AUDIT_EVENT}/{id} is not known")
        shown = (
            (since is None or found.last_updated > since)
            and (at is None or found.last_updated < at[1])
            and cursor is None
            and count > 0
        )
        versions = [found] if shown else []
        bundle = history_bundle(base, versions, links, total=len(versions))
    else:
        async with ctx.store.searching(ctx.principal) as searches:
            versions, next_cursor = await event_history(
                await driver_of(searches),
                ctx.principal,
                since=since,
                at=at,
                until=until,
                count=count,
                cursor=None if cursor is None else cursor[:2],
            )
        total = None
        if next_cursor is not None:
            links["next"] = link(base, path, [*echo, ("_cursor", _encode(*next_cursor, until))])
        elif cursor is None:
            total = len(versions)
        bundle = history_bundle(base, versions, links, total=total)
    return Result(
        200,
        {"resourceType": bundle.pop("resourceType"), "meta": {"lastUpdated": instant(until)}}
        | bundle,
    )
