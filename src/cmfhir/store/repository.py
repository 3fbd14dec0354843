"""Reading and writing resource versions inside one database transaction.

Nothing here commits: `Store.transaction()` opens the transaction and commits when the
interaction's block ends, so a FHIR transaction Bundle is one database transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, Conflict, Forbidden
from cmfhir.resources.index_values import ResourceIndex
from cmfhir.search.model import SearchRequest
from cmfhir.store import check
from cmfhir.store.access import check_writes, visible
from cmfhir.store.audit_events import refuse_audit_writes
from cmfhir.store.copying import (
    HISTORY_COLUMNS,
    INDEX_COLUMNS,
    RESOURCE_COLUMNS,
    STAMP_AND_RIDS,
    copy_records,
    to_millisecond,
)
from cmfhir.store.driver import driver_connection
from cmfhir.store.history import history_query, just_after_now, restamp, watermark
from cmfhir.store.includes import Include, Included, fetch_included
from cmfhir.store.indexing import index_records
from cmfhir.store.integrity import (
    ReferencePolicy,
    dangling_issue,
    dangling_references,
    referrers,
)
from cmfhir.store.outbox import Event, EventPosition, read_events
from cmfhir.store.reads import read_current
from cmfhir.store.records import Current, NewVersion, StoredVersion
from cmfhir.store.schema import INDEX_TABLES, event, resource, resource_history
from cmfhir.store.search_sql import SearchPage, run_search

__all__ = ["HistoryPage", "Repository", "SearchPage"]

_content_text = cast(resource.c.content, Text)
_READ = str(
    select(resource.c.version, resource.c.last_updated, resource.c.deleted, _content_text)
    .where(resource.c.resource_type == bindparam("t"), resource.c.id == bindparam("i"))
    .compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
)
_history_text = cast(resource_history.c.content, Text)
_EVENT_COLUMNS = [
    "rid",
    "resource_type",
    "id",
    "version",
    "method",
    "patient_id",
    "previous_patient_id",
]


class HistoryPage:
    def __init__(self, versions: list[StoredVersion], cursor: tuple[datetime, int, int] | None):
        self.versions = versions
        self.next_cursor = cursor


class Repository:
    """The data-access functions, bound to one open connection (and its transaction)."""

    def __init__(
        self,
        conn: AsyncConnection,
        references: ReferencePolicy | None = None,
        principal: Principal | None = None,
    ) -> None:
        self.conn = conn
        self.references = references or ReferencePolicy()
        # Who this transaction acts for: every read is narrowed to what it may see and
        # every write checked (store/access.py). None sees nothing and writes nothing.
        self.principal = principal
        # What the referential-integrity checks look at when the transaction ends: the
        # versions written (by rid, the latest) and the resources deleted.
        self._written: dict[int, NewVersion] = {}
        self._deleted: list[tuple[str, str]] = []
        # Every version the principal's writes stored in this transaction, in order (what
        # `Store.before_commit` audits).
        self.journal: list[NewVersion] = []

    # -- reads ------------------------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> StoredVersion | None:
        if self.principal is None or not self.principal.unrestricted:
            return await self._read_narrowed(resource_type, id)
        # The hottest query of all goes straight to asyncpg (its prepared-statement cache,
        # on the same connection and transaction): building and executing it through
        # SQLAlchemy cost 40% of a read.
        raw = await self.conn.get_raw_connection()
        driver: Any = raw.driver_connection
        row = await driver.fetchrow(_READ, resource_type, id)
        if row is None:
            return None
        return StoredVersion(resource_type, id, row[0], row[1], row[2], row[3])

    async def _read_narrowed(self, resource_type: str, id: str) -> StoredVersion | None:
        """A read by a principal that does not see everything: what it may not see is not
        found, exactly as what does not exist."""
        return await read_current(
            await driver_connection(self.conn), self.principal, resource_type, id
        )

    def _trusted(self, what: str) -> None:
        if self.principal is None or not self.principal.unrestricted:
            raise Forbidden(f"{what} is for the server itself")

    async def vread(self, resource_type: str, id: str, version: int) -> StoredVersion | None:
        row = (
            await self.conn.execute(
                select(
                    resource_history.c.last_updated, resource_history.c.method, _history_text
                ).where(
                    resource_history.c.resource_type == resource_type,
                    resource_history.c.id == id,
                    resource_history.c.version == version,
                    visible(self.principal, resource_history, "r"),
                )
            )
        ).first()
        if row is None:
            return None
        return StoredVersion(
            resource_type, id, version, row[0], row[1] == "delete", row[2], method=row[1]
        )

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Current content of several resources in one round trip (deleted ones left out)."""
        if not keys:
            return {}
        rows = await self.conn.execute(
            select(resource.c.resource_type, resource.c.id, _content_text).where(
                tuple_(resource.c.resource_type, resource.c.id).in_(list(keys)),
                resource.c.deleted.is_(False),
                visible(self.principal, resource, "r"),
            )
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def read_rids(self, rids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        if not rids:
            return {}
        rows = await self.conn.execute(
            select(resource.c.rid, resource.c.resource_type, resource.c.id, _content_text).where(
                resource.c.rid.in_(list(rids)), visible(self.principal, resource, "r")
            )
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def search(self, request: SearchRequest, *, count_up_to: int | None) -> SearchPage:
        """One page of matches and the total (store/search_sql.py `run_search`), of what
        the transaction's principal may see."""
        return await run_search(
            await driver_connection(self.conn),
            request,
            count_up_to=count_up_to,
            principal=self.principal,
        )

    async def lock(self, resource_type: str, id: str) -> Current | None:
        """The current row, locked until the transaction ends (serializes writers)."""
        row = (
            await self.conn.execute(
                select(resource.c.rid, resource.c.version, resource.c.deleted)
                .where(resource.c.resource_type == resource_type, resource.c.id == id)
                .with_for_update()
            )
        ).first()
        return None if row is None else Current(row[0], row[1], row[2])

    async def lock_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Current]:
        """Lock the current rows of several resources in one round trip, in a fixed order."""
        if not keys:
            return {}
        rows = await self.conn.execute(
            select(
                resource.c.resource_type,
                resource.c.id,
                resource.c.rid,
                resource.c.version,
                resource.c.deleted,
            )
            .where(tuple_(resource.c.resource_type, resource.c.id).in_(sorted(set(keys))))
            .order_by(resource.c.rid)
            .with_for_update()
        )
        return {(r[0], r[1]): Current(r[2], r[3], r[4]) for r in rows}

    async def lock_or_claim(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Current]:
        """Lock the current rows of `keys`; for those that do not exist yet, hold a lock on the
        name until the transaction ends, then look again. Two clients creating the same
        Type/id by update then take turns: the second one sees the first one's resource and
        updates it, instead of failing on the unique key."""
        found = await self.lock_many(keys)
        missing = sorted({key for key in keys if key not in found})
        if missing:
            await self.conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 0) AS h "
                    "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS names"
                ),
                {"keys": [f"{t}/{i}" for t, i in missing]},
            )
            found.update(await self.lock_many(missing))
        return found

    async def history_watermark(self, *, follow: bool = True, settle: float = 0.0) -> datetime:
        """The instant before which history is complete (store/history.py), waiting up to
        `settle` seconds for the writes running at the call to end. Not following (a
        history without `_since`): just after now, so that a client reads its own last
        write whatever other transactions are still running."""
        if not follow:
            return await just_after_now(self.conn)
        return await watermark(self.conn, settle=settle)

    async def history(
        self,
        *,
        resource_type: str | None,
        id: str | None,
        since: datetime | None,
        at: tuple[datetime, datetime] | None,
        until: datetime,
        count: int,
        cursor: tuple[datetime, int, int] | None,
    ) -> HistoryPage:
        """Versions stamped before `until` (the watermark), newest first."""
        query = history_query(
            resource_type=resource_type,
            id=id,
            since=since,
            at=at,
            until=until,
            cursor=cursor,
            limit=count + 1,
            principal=self.principal,
        )
        rows = (await self.conn.execute(query)).all()
        versions = [
            StoredVersion(r[0], r[1], r[2], r[3], r[4] == "delete", r[5], method=r[4])
            for r in rows[:count]
        ]
        next_cursor = None
        if len(rows) > count:
            last = rows[count - 1]
            next_cursor = (last[3], last[6], last[2])
        return HistoryPage(versions, next_cursor)

    async def read_events(
        self, after: EventPosition, limit: int
    ) -> tuple[list[Event], EventPosition]:
        """The outbox in gap-free order (store/outbox.py)."""
        self._trusted("Reading the outbox")
        return await read_events(self.conn, after, limit)

    # -- writes -----------------------------------------------------------------------------

    async def write(self, versions: Sequence[NewVersion], *, as_server: bool = False) -> None:
        """Store new versions: current rows, history, index rows and outbox events.
        Referential integrity is checked when the transaction ends (`finish`).

        `as_server`: versions the server writes on its own account beside the principal's
        (the AuditEvents of the transaction's writes): neither checked against the
        principal's grants nor for the references they name, and not journaled.

        Each version is stamped here with the database clock, read after this transaction
        has its id (the history watermark relies on it): `last_updated` and the content's
        `meta.lastUpdated` are replaced in the records, so callers answer with them."""
        if not versions:
            return
        refuse_audit_writes(versions)  # AuditEvents have a table of their own
        fresh = [v for v in versions if v.rid is None]
        changed = [v for v in versions if v.rid is not None]
        previous = await self._previous_members([v.rid for v in changed if v.rid is not None])
        if not as_server:
            await check_writes(
                self.conn,
                self.principal,
                [
                    (
                        v.resource_type,
                        _permission(v, v.rid is not None and v.rid in previous),
                        previous.get(v.rid) if v.method == "delete" and v.rid else v.patient_id,
                        previous.get(v.rid) if v.rid is not None else None,
                    )
                    for v in versions
                ],
            )
            self.journal.extend(versions)
        rids = await self._stamp(versions, len(fresh))
        moved_from: list[str | None] = []
        for v in versions:
            before = previous.get(v.rid) if v.rid is not None else None
            if v.method == "delete":
                # A deletion stays in the compartment it leaves (history, outbox, Citus).
                v.patient_id = before
                moved_from.append(None)
            else:
                moved_from.append(before if before != v.patient_id else None)
        if fresh:
            # Rids drawn with the stamp, then one COPY: no INSERT of a few hundred
            # parameters for PostgreSQL to plan, nor for SQLAlchemy to build.
            for v, rid in zip(fresh, rids, strict=True):
                v.rid = rid
            await self._copy(
                resource.name,
                RESOURCE_COLUMNS,
                [
                    (
                        v.rid,
                        v.resource_type,
                        v.id,
                        v.version,
                        v.last_updated,
                        v.method == "delete",
                        v.patient_id,
                        v.content,
                    )
                    for v in fresh
                ],
            )
        if changed:
            await self.conn.execute(
                update(resource)
                .where(resource.c.rid == bindparam("b_rid"))
                .values(
                    version=bindparam("b_version"),
                    last_updated=bindparam("b_last_updated"),
                    deleted=bindparam("b_deleted"),
                    patient_id=bindparam("b_patient_id"),
                    content=cast(bindparam("body", type_=Text), JSONB),
                ),
                [
                    {
                        "b_rid": v.rid,
                        "b_version": v.version,
                        "b_last_updated": v.last_updated,
                        "b_deleted": v.method == "delete",
                        "b_patient_id": v.patient_id,
                        "body": v.content,
                    }
                    for v in changed
                ],
            )
            await self._delete_index([v.rid for v in changed if v.rid is not None])
        await self._copy(
            resource_history.name,
            HISTORY_COLUMNS,
            [
                (
                    v.rid,
                    v.version,
                    v.resource_type,
                    v.id,
                    v.last_updated,
                    v.method,
                    v.patient_id,
                    v.content,
                )
                for v in versions
            ],
        )
        await self._insert_index(
            (v.rid, v.resource_type, v.index)
            for v in versions
            if v.index is not None and v.rid is not None
        )
        await self._copy(
            event.name,
            _EVENT_COLUMNS,
            [
                (v.rid, v.resource_type, v.id, v.version, v.method, v.patient_id, before)
                for v, before in zip(versions, moved_from, strict=True)
            ],
        )
        if as_server:
            return
        for v in versions:
            if v.method == "delete":
                self._deleted.append((v.resource_type, v.id))
            elif v.rid is not None and v.index is not None:
                # Only a version with a reference to some Type/id can have a dangling one
                # (and an earlier version of the same resource in this transaction is
                # replaced: its index rows are gone).
                if any(e.target_id is not None for e in v.index.reference):
                    self._written[v.rid] = v
                else:
                    self._written.pop(v.rid, None)

    async def finish(self) -> None:
        """Checks made once every write of the transaction is done, just before it commits
        (`Store.transaction` calls it): referential integrity. Checked at the end, a
        transaction may write its entries in any order and in several calls — a reference
        to a resource created later in it, or a delete whose referrer a later entry
        repoints or deletes, is fine. An error rolls the whole transaction back."""
        written, self._written = self._written, {}
        deleted, self._deleted = self._deleted, []
        policy = self.references
        if policy.on_write and written:
            dangling = await dangling_references(self.conn, list(written.values()), policy.bases)
            if dangling:
                issues = [dangling_issue(d) for d in dangling]
                raise BadRequest(issues[0].diagnostics, issues=issues)
        if policy.on_delete and deleted:
            found = await referrers(self.conn, deleted, policy.bases)
            if found:
                targets = sorted({f.target for f in found})
                names = ", ".join(f"{f.resource_type}/{f.id} ({f.param})" for f in found)
                raise Conflict(
                    f"{', '.join(targets)} cannot be deleted: other resources still refer "
                    f"to it: {names}",
                    code="processing",
                )

    async def _stamp(self, versions: Sequence[NewVersion], new_rids: int) -> list[int]:
        """Stamp `versions` with the database clock; `new_rids` rids drawn in the same
        round trip, for the versions of resources not stored yet."""
        # Through SQLAlchemy, not the driver: it begins the transaction if nothing has yet,
        # and the stamp must be read inside it.
        _, clock, rids = (await self.conn.execute(STAMP_AND_RIDS, {"n": new_rids})).one()
        now = to_millisecond(clock)
        for v in versions:
            restamp(v, now)
        return list(rids)

    async def _previous_members(self, rids: list[int]) -> dict[int, str | None]:
        """The compartment of each resource's current (previous, once written) version;
        none for one that is deleted."""
        if not rids:
            return {}
        rows = await self.conn.execute(
            select(resource.c.rid, resource.c.patient_id, resource.c.deleted).where(
                resource.c.rid.in_(rids)
            )
        )
        return {r[0]: (None if r[2] else r[1]) for r in rows}

    async def batch(
        self, resource_type: str | None, after_rid: int, limit: int, *, lock: bool = False
    ) -> list[tuple[int, str, str]]:
        """The next `limit` live resources after `after_rid` (rid, type, content); with
        `lock`, no write changes them until the transaction ends (reindexing)."""
        self._trusted("Reading every resource in turn")
        query = (
            select(resource.c.rid, resource.c.resource_type, _content_text)
            .where(resource.c.rid > after_rid, resource.c.deleted.is_(False))
            .order_by(resource.c.rid)
            .limit(limit)
        )
        if lock:
            query = query.with_for_update()
        if resource_type is not None:
            query = query.where(resource.c.resource_type == resource_type)
        return [(r[0], r[1], r[2]) for r in await self.conn.execute(query)]

    async def replace_index(
        self, entries: Sequence[tuple[int, str, ResourceIndex, str | None]]
    ) -> None:
        """Rebuild the index rows (and compartment) of current versions: (rid, type, index,
        patient id)."""
        if not entries:
            return
        await check_writes(
            self.conn, self.principal, [(t, "u", patient, patient) for _, t, _, patient in entries]
        )
        await self._delete_index([rid for rid, _, _, _ in entries])
        await self._insert_index((rid, type_, index) for rid, type_, index, _ in entries)
        await self.conn.execute(
            update(resource)
            .where(resource.c.rid == bindparam("b_rid"))
            .values(patient_id=bindparam("b_patient_id")),
            [{"b_rid": rid, "b_patient_id": patient} for rid, _, _, patient in entries],
        )

    async def replace_content(self, rid: int, version: int, content: str) -> None:
        """Replace the content of version `version` in place, in the current row and its
        history row: `$meta-add`/`$meta-delete` change meta without making a new version.
        The caller holds the row's lock and rebuilds its index rows (`replace_index`)."""
        body = cast(bindparam("body", type_=Text), JSONB)
        await self.conn.execute(
            update(resource)
            .where(resource.c.rid == rid, resource.c.version == version)
            .values(content=body),
            {"body": content},
        )
        await self.conn.execute(
            update(resource_history)
            .where(resource_history.c.rid == rid, resource_history.c.version == version)
            .values(content=body),
            {"body": content},
        )

    async def structural_problems(self) -> dict[str, list[str]]:
        return await check.structural_problems(self.conn)

    async def index_differences(
        self, expected: Sequence[tuple[int, str, ResourceIndex]]
    ) -> list[int]:
        return await check.index_differences(self.conn, expected)

    async def _delete_index(self, rids: list[int]) -> None:
        if rids:
            for table in INDEX_TABLES.values():
                # One array parameter: an IN list of 20,000 values cost more to build in
                # SQLAlchemy than to run.
                await self.conn.execute(
                    text(f"DELETE FROM {table.name} WHERE rid = ANY(CAST(:rids AS bigint[]))"),
                    {"rids": rids},
                )

    async def _insert_index(self, items: Iterable[tuple[int, str, ResourceIndex]]) -> None:
        """Index rows of many versions, one COPY per index table."""
        per_table: dict[str, list[tuple[Any, ...]]] = {}
        for rid, resource_type, index in items:
            for kind, records in index_records(rid, resource_type, index).items():
                if records:
                    per_table.setdefault(kind, []).extend(records)
        for kind, records in per_table.items():
            await self._copy(INDEX_TABLES[kind].name, INDEX_COLUMNS[kind], records)

    async def _copy(self, table: str, columns: list[str], records: list[tuple[Any, ...]]) -> None:
        """COPY rows into `table` on this connection, inside its open transaction: several
        times cheaper than INSERT for the many rows a write makes (history, index, outbox)."""
        if records:
            raw = await self.conn.get_raw_connection()
            await copy_records(raw.driver_connection, table, columns, records)

    async def now(self) -> datetime:
        value: datetime = (await self.conn.execute(select(func.clock_timestamp()))).scalar_one()
        return value

    async def included(
        self,
        matches: Sequence[tuple[int, str, str]],
        include: Sequence[Include],
        revinclude: Sequence[Include],
        *,
        max_depth: int,
        max_total: int,
    ) -> Included:
        """The resources `_include` and `_revinclude` add to a page of matches (rid, type
        and id of each: `SearchPage.rids` beside `SearchPage.matches`)."""
        return await fetch_included(
            self.conn,
            matches,
            include,
            revinclude,
            max_depth=max_depth,
            max_total=max_total,
            principal=self.principal,
        )


def _permission(v: NewVersion, exists: bool) -> str:
    """The SMART permission letter a version's write needs."""
    if v.method == "delete":
        return "d"
    return "u" if exists else "c"
