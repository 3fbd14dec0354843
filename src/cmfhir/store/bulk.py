"""Creating many new resources at once, as a bulk import does: what `Repository.write` does
for a created version (access check, stamp, current row, history, index rows, outbox
event), but with each table's rows sent in one COPY — the current rows too, with their
`rid`s drawn from the table's sequence beforehand — and with the index rows made ahead
(`index_row_tuples`, in the import's validating processes) instead of in the writer.

Only creations come here: a resource that exists already (a new version of it) goes through
`Repository.write` in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from cmfhir.errors import BadRequest, Conflict, FhirError
from cmfhir.resources.index_values import ResourceIndex
from cmfhir.store.access import check_writes
from cmfhir.store.copying import STAMP_AND_RIDS, copy_first_versions, to_millisecond
from cmfhir.store.driver import driver_connection
from cmfhir.store.indexing import Record, index_records
from cmfhir.store.records import NewVersion
from cmfhir.store.repository import Repository

__all__ = ["BulkVersion", "create_many", "index_row_tuples"]

IndexTuples = dict[str, list[Record]]
_CONFLICTS = {"23505", "40001", "40P01"}


@dataclass(slots=True)
class BulkVersion:
    """The first version of a resource, made ready to store but for its stamp: the JSON text
    around its `meta` (`head` is `{"resourceType":..,"id":..` and `tail` the rest, from `,`
    or `}`), the client's `meta` (versionId and lastUpdated are set when stamped), its
    member, its index rows (`index_row_tuples`) and whether it names another resource."""

    resource_type: str
    id: str
    head: str
    meta: dict[str, Any]
    tail: str
    patient_id: str | None
    rows: IndexTuples

    def content(self, version: int, stamp: str) -> str:
        """The JSON text served for this resource at `version`, stamped `stamp`."""
        meta = dict(self.meta)
        meta["versionId"] = str(version)
        meta["lastUpdated"] = stamp
        return f'{self.head},"meta":{orjson.dumps(meta).decode()}{self.tail}'


def index_row_tuples(resource_type: str, index: ResourceIndex) -> IndexTuples:
    """The index records of a version not yet stored (`rid` 0, first in each record, filled
    in by `create_many`), per index family."""
    return {kind: rows for kind, rows in index_records(0, resource_type, index).items() if rows}


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def create_many(repo: Repository, versions: Sequence[BulkVersion]) -> list[NewVersion]:
    """Store `versions` as new resources (version 1) in `repo`'s transaction, each table's
    rows in one COPY; the records written (index left out), also in `repo.journal`. Refused
    (403) unless the principal may create them all; a Type/id that exists already fails
    the transaction (409), so the caller locks the names first and sends only new ones.
    Their references are not checked when the transaction ends: for a repository whose
    policy asks for that, this is refused (an import checks them at its end instead)."""
    if not versions:
        return []
    if repo.references.on_write:
        raise RuntimeError("create_many writes without the reference check on write")
    await check_writes(
        repo.conn, repo.principal, [(v.resource_type, "c", v.patient_id, None) for v in versions]
    )
    # Through SQLAlchemy: it begins the transaction if nothing has yet.
    _, clock, rids = (await repo.conn.execute(STAMP_AND_RIDS, {"n": len(versions)})).one()
    now = to_millisecond(clock)
    stamp = _instant(now)
    records = [
        NewVersion(
            resource_type=v.resource_type,
            id=v.id,
            version=1,
            last_updated=now,
            method="create",
            content=v.content(1, stamp),
            index=None,
            patient_id=v.patient_id,
            rid=rid,
        )
        for v, rid in zip(versions, rids, strict=True)
    ]
    index: IndexTuples = {}
    for v, rid in zip(versions, rids, strict=True):
        for kind, rows in v.rows.items():
            index.setdefault(kind, []).extend((rid, *row[1:]) for row in rows)
    try:
        await copy_first_versions(await driver_connection(repo.conn), records, index)
    except asyncpg.PostgresError as error:
        refusal = _refusal(error)
        if refusal is None:
            raise
        raise refusal from error
    repo.journal.extend(records)
    return records


def _refusal(error: asyncpg.PostgresError) -> FhirError | None:
    """What the client is told of a refused COPY (as `Store.transaction` tells it of a
    refused statement); None for anything else (a bug, raised as it is)."""
    state: object = getattr(error, "sqlstate", None)
    if state in _CONFLICTS:
        return Conflict(
            "A concurrent change to the same resources won; retry the request.",
            headers={"Retry-After": "1"},
        )
    if isinstance(state, str) and state.startswith("22"):
        return BadRequest(
            "The request holds a value the database cannot store or compare "
            "(such as a NUL character or a number out of range)"
        )
    return None
