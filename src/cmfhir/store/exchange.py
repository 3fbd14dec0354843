"""The reads of the exchange features ($everything, Bulk Data export and import): a
member's compartment by its `patient_id`, page by page in `rid` order, and an export's
resources streamed under the principal's access predicate (store/access.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, exists, literal, select, text

from cmfhir.store.access import visible
from cmfhir.store.repository import Repository
from cmfhir.store.schema import resource, resource_history

__all__ = ["compartment_page", "resource_pages", "stream_deleted"]


def _filters(
    types: Sequence[str] | None,
    since: datetime | None,
    care: Sequence[tuple[str, str]] | None,
    params: dict[str, Any],
) -> str:
    sql = ""
    if types is not None:
        sql += " AND r.resource_type = ANY(:types)"
        params["types"] = list(types)
    if since is not None:
        sql += " AND r.last_updated > :since"
        params["since"] = since
    if care is not None:
        # Resources with a care date (the type's clinical date parameter) must overlap the
        # period; those without one are kept (https://hl7.org/fhir/R4/patient-operation-everything.html).
        params["care_types"] = [t for t, _ in care]
        params["care_params"] = [p for _, p in care]
        sql += """
          AND (NOT EXISTS (SELECT 1 FROM idx_date d
                           JOIN unnest(CAST(:care_types AS text[]), CAST(:care_params AS text[]))
                                AS c(resource_type, param)
                             ON c.resource_type = d.resource_type AND c.param = d.param
                           WHERE d.rid = r.rid)
               OR EXISTS (SELECT 1 FROM idx_date d
                          JOIN unnest(CAST(:care_types AS text[]), CAST(:care_params AS text[]))
                               AS c(resource_type, param)
                            ON c.resource_type = d.resource_type AND c.param = d.param
                          WHERE d.rid = r.rid AND d.high > :start AND d.low < :end))"""
    return sql


async def compartment_page(
    repo: Repository,
    patient_id: str,
    *,
    after: int,
    limit: int,
    types: Sequence[str] | None = None,
    since: datetime | None = None,
    care: Sequence[tuple[str, str]] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[tuple[int, str, str, str]]:
    """The current resources of one member's compartment after `rid` `after`:
    `(rid, type, id, content)`, at most `limit`."""
    params: dict[str, Any] = {"patient": patient_id, "after": after, "limit": limit}
    if care is not None:
        params["start"] = start
        params["end"] = end
    sql = (
        "SELECT r.rid, r.resource_type, r.id, CAST(r.content AS text) FROM resource r"
        " WHERE r.patient_id = :patient AND NOT r.deleted AND r.rid > :after"
        + _filters(types, since, care, params)
        + " ORDER BY r.rid LIMIT :limit"
    )
    rows = await repo.conn.execute(text(sql), params)
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def _visible(repo: Repository) -> ColumnElement[bool]:
    # An export reads what a type-level search by the same principal would find.
    return visible(repo.principal, resource, "s")


async def resource_pages(
    repo: Repository,
    resource_type: str,
    *,
    patients: Sequence[str] | None = None,
    since: datetime | None = None,
    member_only: bool = False,
    batch: int = 2000,
) -> AsyncIterator[list[tuple[str, str | None, str]]]:
    """Every current resource of one type the repository's principal may see (of these
    members, or of any member when `member_only`; stamped at or after `since`),
    `(id, patient_id, content)`, in pages of at most `batch` fetched in turn from a
    server-side cursor: no more than a page is held, whatever the count."""
    query = select(resource.c.id, resource.c.patient_id, cast(resource.c.content, Text)).where(
        resource.c.resource_type == resource_type,
        resource.c.deleted.is_(False),
        _visible(repo),
    )
    if patients is not None:
        query = query.where(resource.c.patient_id.in_(list(patients)))
    elif member_only:
        query = query.where(resource.c.patient_id.is_not(None))
    if since is not None:
        query = query.where(resource.c.last_updated >= since)
    result = await repo.conn.stream(query.execution_options(yield_per=batch))
    async for partition in result.partitions(batch):
        yield [(str(row[0]), row[1], str(row[2])) for row in partition]


async def stream_deleted(
    repo: Repository,
    types: Sequence[str],
    since: datetime,
    *,
    patients: Sequence[str] | None = None,
) -> AsyncIterator[tuple[str, str]]:
    """Resources of these types the principal may see deleted at or after `since` (and not
    re-created): `(type, id)`."""
    query = select(resource.c.resource_type, resource.c.id).where(
        resource.c.deleted.is_(True),
        resource.c.resource_type.in_(list(types)),
        resource.c.last_updated >= since,
        _visible(repo),
    )
    if patients is not None:
        h = resource_history.alias()
        query = query.where(
            exists(
                select(literal(1))
                .select_from(h)
                .where(h.c.rid == resource.c.rid, h.c.patient_id.in_(list(patients)))
            )
        )
    result = await repo.conn.stream(query.execution_options(yield_per=1000))
    async for partition in result.partitions(1000):
        for row in partition:
            yield str(row[0]), str(row[1])


async def relax_statement_timeout(repo: Repository) -> None:
    """An export's snapshot transaction runs as long as the export: no statement limit."""
    await repo.conn.execute(text("SET LOCAL statement_timeout = 0"))


async def patient_ids_in_groups(repo: Repository, group_id: str) -> list[str] | None:
    """The Patient members of `Group/group_id` (its current content), or None when there is
    no such Group the principal may see."""
    row = (
        await repo.conn.execute(
            select(cast(resource.c.content, Text)).where(
                resource.c.resource_type == "Group",
                resource.c.id == group_id,
                resource.c.deleted.is_(False),
                visible(repo.principal, resource, "r"),
            )
        )
    ).first()
    if row is None:
        return None
    content = json.loads(row[0])
    out: list[str] = []
    for member in content.get("member", []):
        reference = member.get("entity", {}).get("reference", "")
        if member.get("inactive") is True:
            continue
        if reference.startswith("Patient/"):
            out.append(reference.removeprefix("Patient/"))
    return out


async def dangling_since(
    repo: Repository, since: datetime, limit: int = 10_000
) -> list[tuple[str, str, str]]:
    """References (indexed ones) from resources written since `since` to local resources
    that are not there: `(type, id, reference)`. What an import checks at its end."""
    rows = await repo.conn.execute(
        text(
            """
            SELECT DISTINCT r.rid, r.resource_type, r.id, x.url FROM resource r
            JOIN idx_reference x ON x.rid = r.rid
            WHERE r.last_updated >= :since AND NOT r.deleted
              AND x.target_type IS NOT NULL AND x.target_id IS NOT NULL
              AND x.url NOT LIKE '%://%'
              AND NOT EXISTS (SELECT 1 FROM resource t WHERE t.resource_type = x.target_type
                              AND t.id = x.target_id AND NOT t.deleted)
            ORDER BY r.rid LIMIT :limit
            """
        ),
        {"since": since, "limit": limit},
    )
    return [(str(r[1]), str(r[2]), str(r[3])) for r in rows]
