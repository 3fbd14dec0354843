"""The history query (https://hl7.org/fhir/R4B/http.html#history) and the watermark that
lets a client follow the server with `_since` and see every version exactly once.

A version is stamped with the database clock after its transaction has a transaction id
(`Repository.write`), so its stamp is never earlier than the start of that transaction.
The watermark is the earliest start among the write transactions still running (or now,
if none): every version stamped before it is committed and visible, and none can still
appear with such a stamp. A history answer holds only versions stamped before the
watermark and names it as the Bundle's `meta.lastUpdated`; a follower that sends it as its
next `_since` gets the versions from there on, none twice and none missed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Text, and_, cast, exists, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.store.access import visible
from cmfhir.store.records import NewVersion
from cmfhir.store.schema import resource_history

__all__ = ["history_query", "just_after_now", "restamp", "watermark"]

# statement_timestamp() is taken before the scan of pg_stat_activity, so a transaction
# that gets its id after the scan passed it stamps later than the watermark. Transactions
# with no id yet have written nothing, and will stamp after they get one. A transaction
# whose start this role may not see (another role, without pg_read_all_stats) holds the
# watermark at the epoch until it ends: followers wait, they never miss.
_WATERMARK = text(
    """
    SELECT least(statement_timestamp(),
                 min(coalesce(xact_start, timestamptz 'epoch'))),
           statement_timestamp()
    FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL
      AND datname = current_database()
      AND pid <> pg_backend_pid()
    """
)


_SETTLE_POLL_S = 0.01
_FRESH_ACTIVITY = text("SELECT pg_stat_clear_snapshot()")


def _to_millisecond(moment: datetime) -> datetime:
    # Stamps are stored to the millisecond; so is the watermark, rounded down, so that a
    # stamp below it is below the unrounded value too.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def watermark(conn: AsyncConnection, *, settle: float = 0.0) -> datetime:
    """The instant before which every version is committed and no new one can appear.
    Run it before the history query, in its own statement: the query's snapshot is then
    taken after it.

    With `settle`, wait up to that many seconds for the write transactions that were
    running when it was first asked to end, so that the answer reaches the time of the
    request and holds every write committed before it (the caller's own, beside the
    background workers' short transactions). A transaction still running after that
    holds the watermark back as usual: followers wait, they never miss."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    value, asked = (await conn.execute(_WATERMARK)).one()
    while value < asked and loop.time() < deadline:
        await asyncio.sleep(_SETTLE_POLL_S)
        # pg_stat_activity is read once per transaction unless its snapshot is dropped.
        await conn.execute(_FRESH_ACTIVITY)
        value = (await conn.execute(_WATERMARK)).one()[0]
    return _to_millisecond(min(value, asked))


async def just_after_now(conn: AsyncConnection) -> datetime:
    """A millisecond after the database's now: every committed version is stamped before."""
    value: datetime = (
        await conn.execute(text("SELECT statement_timestamp() + interval '1 millisecond'"))
    ).scalar_one()
    return _to_millisecond(value)


def history_query(
    *,
    resource_type: str | None,
    id: str | None,
    since: datetime | None,
    at: tuple[datetime, datetime] | None,
    until: datetime,
    cursor: tuple[datetime, int, int] | None,
    limit: int,
    principal: Principal | None,
) -> Select[Any]:
    """Versions stamped before `until`, newest first, after `cursor` (stamp, rid, version).

    `since`: stamped at or after it. `at` = [low, high): per resource, the versions that
    were current at some point of that period — stamped before `high`, and not followed by
    a version stamped at or before `low`.
    """
    h = resource_history.c
    query = select(
        h.resource_type,
        h.id,
        h.version,
        h.last_updated,
        h.method,
        cast(resource_history.c.content, Text),
        h.rid,
    ).where(h.last_updated < until, visible(principal, resource_history, "r" if id else "s"))
    if resource_type is not None:
        query = query.where(h.resource_type == resource_type)
    if id is not None:
        query = query.where(h.id == id)
    if since is not None:
        query = query.where(h.last_updated >= since)
    if at is not None:
        low, high = at
        following = resource_history.alias("following")
        query = query.where(
            h.last_updated < high,
            ~exists().where(
                and_(
                    following.c.rid == h.rid,
                    following.c.version == h.version + 1,
                    following.c.last_updated <= low,
                    following.c.last_updated < until,
                )
            ),
        )
    if cursor is not None:
        query = query.where(tuple_(h.last_updated, h.rid, h.version) < tuple_(*cursor))
    return query.order_by(h.last_updated.desc(), h.rid.desc(), h.version.desc()).limit(limit)


def restamp(v: NewVersion, now: datetime) -> None:
    """Give `v` the stamp `now`, in `last_updated` and in its content's meta.lastUpdated."""
    if v.content is not None:
        # The content was made by interactions.versions.stamp: meta comes right after
        # resourceType and id, with lastUpdated as `instant(v.last_updated)`, so the first
        # `"lastUpdated":"` is meta's (a quote inside a string value would be escaped).
        old = f'"lastUpdated":"{_instant(v.last_updated)}"'
        new = f'"lastUpdated":"{_instant(now)}"'
        head, found, tail = v.content.partition(old)
        if found and '"lastUpdated":"' not in head:
            v.content = head + new + tail
        else:
            served = parse_json(v.content)
            served.setdefault("meta", {})["lastUpdated"] = _instant(now)
            v.content = dump_json(served).decode()
    v.last_updated = now


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
