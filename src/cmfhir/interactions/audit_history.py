"""History of AuditEvents (https://hl7.org/fhir/R4B/http.html#history), from their own
table (store/audit_events.py): an AuditEvent has one version, its create, so the history
of one is that version and the history of the type is every event, the last stored
first, with `_since`, `_at`, `_count` and paging as for other types. The Bundle's
`meta.lastUpdated` is the server's clock when the first page was read."""

from __future__ import annotations

from datetime import datetime

from cmfhir.errors import NotFound
from cmfhir.interactions.audit_store import AUDIT_EVENT, read_audit_event
from cmfhir.interactions.bundles import history_bundle, link
from cmfhir.interactions.context import FhirContext, Result, instant, utcnow
from cmfhir.interactions.history_params import decode_cursor, encode_cursor, history_params
from cmfhir.store.audit_queries import driver_of, event_history

__all__ = ["AUDIT_EVENT", "audit_history"]


async def audit_history(
    ctx: FhirContext, id: str | None, params: list[tuple[str, str]], *, base: str
) -> Result:
    asked = history_params(params, ctx.limits.default_count, ctx.limits.max_count)
    since, at, count, echo = asked.since, asked.at, asked.count, asked.echo
    cursor: tuple[datetime, int, int, datetime] | None = None
    if asked.cursor is not None:
        cursor = decode_cursor(asked.cursor, (datetime, int, int, datetime))
    path = "/".join(p for p in (AUDIT_EVENT, id, "_history") if p)
    links = {"self": link(base, path, echo)}
    until = cursor[3] if cursor is not None else utcnow()
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
                cursor=None if cursor is None else cursor[:3],
            )
        total = None
        if next_cursor is not None:
            links["next"] = link(
                base, path, [*echo, ("_cursor", encode_cursor(*next_cursor, until))]
            )
        elif cursor is None:
            total = len(versions)
        bundle = history_bundle(base, versions, links, total=total)
    return Result(
        200,
        {"resourceType": bundle.pop("resourceType"), "meta": {"lastUpdated": instant(until)}}
        | bundle,
    )
