"""Consistency checks of the stored data (`cmfhir check`): every current version has its
history row with the same content, versions run 1..n, every version has its outbox event
(or had one, pruned after retention),
and no index row belongs to a deleted or missing resource. The index rows themselves are
compared with a fresh extraction by interactions/check.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.resources.index_values import ResourceIndex
from cmfhir.store.indexing import index_rows
from cmfhir.store.schema import INDEX_TABLES

__all__ = ["index_differences", "structural_problems"]

_SAMPLE = 20

_CHECKS = {
    "current version without its history row": """
        SELECT r.resource_type || '/' || r.id FROM resource r
        LEFT JOIN resource_history h ON h.rid = r.rid AND h.version = r.version
        WHERE h.rid IS NULL""",
    "current content differs from its history row": """
        SELECT r.resource_type || '/' || r.id FROM resource r
        JOIN resource_history h ON h.rid = r.rid AND h.version = r.version
        WHERE h.content IS DISTINCT FROM r.content
           OR r.deleted <> (h.method = 'delete')""",
    "versions not numbered 1..n": """
        SELECT r.resource_type || '/' || r.id FROM resource r
        JOIN (SELECT rid, count(*) AS n, min(version) AS lo, max(version) AS hi
              FROM resource_history GROUP BY rid) h ON h.rid = r.rid
        WHERE h.lo <> 1 OR h.hi <> r.version OR h.n <> r.version""",
    "history rows of no resource": """
        SELECT h.resource_type || '/' || h.id FROM resource_history h
        LEFT JOIN resource r ON r.rid = h.rid WHERE r.rid IS NULL""",
    # A version stamped before the latest pruning run's horizon may have had its event pruned
    # once every consumer passed it (store/consumers.py): that is retention, not a loss.
    "version without its outbox event": """
        SELECT h.resource_type || '/' || h.id || '/_history/' || h.version
        FROM resource_history h
        LEFT JOIN event e ON e.rid = h.rid AND e.version = h.version
        WHERE e.seq IS NULL
          AND h.last_updated >= coalesce((SELECT max("before") FROM event_pruned),
                                         '-infinity')""",
}


async def structural_problems(conn: AsyncConnection) -> dict[str, list[str]]:
    """Each failed check with a sample of the resources it concerns (type/id only)."""
    problems: dict[str, list[str]] = {}
    for label, sql in _CHECKS.items():
        rows = await conn.execute(text(f"{sql} LIMIT {_SAMPLE}"))
        found = [row[0] for row in rows]
        if found:
            problems[label] = found
    for kind, table in INDEX_TABLES.items():
        rows = await conn.execute(
            text(
                f"SELECT DISTINCT t.resource_type || ' rid ' || t.rid FROM {table.name} t "
                "LEFT JOIN resource r ON r.rid = t.rid "
                f"WHERE r.rid IS NULL OR r.deleted LIMIT {_SAMPLE}"
            )
        )
        found = [row[0] for row in rows]
        if found:
            problems[f"{kind} index rows of a deleted or missing resource"] = found
    return problems


def _comparable(value: Any) -> str:
    # asyncpg stores datetime.max/min (open Period ends) as ±infinity and reads them back
    # without a time zone.
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value)


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, _comparable(v)) for k, v in row.items()))


async def index_differences(
    conn: AsyncConnection, expected: Sequence[tuple[int, str, ResourceIndex]]
) -> list[int]:
    """The rids whose stored index rows differ from the rows `expected` would produce."""
    rids = [rid for rid, _, _ in expected]
    stored: dict[int, Counter[tuple[Any, ...]]] = {rid: Counter() for rid in rids}
    for kind, table in INDEX_TABLES.items():
        result = await conn.execute(table.select().where(table.c.rid.in_(rids)))
        for found in result.mappings():
            stored[found["rid"]][(kind, *_row_key(dict(found)))] += 1
    differing = []
    for rid, resource_type, index in expected:
        wanted: Counter[tuple[Any, ...]] = Counter()
        for kind, rows in index_rows(rid, resource_type, index).items():
            for row in rows:
                wanted[(kind, *_row_key(row))] += 1
        if wanted != stored[rid]:
            differing.append(rid)
    return differing
