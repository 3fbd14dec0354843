"""The read of one current resource (https://hl7.org/fhir/R4/http.html#read) and of one
version (https://hl7.org/fhir/R4/http.html#vread) as SQL text sent straight to asyncpg,
narrowed by the principal's access predicate as text (store/access_sql.py): the same text
for every principal of one shape, prepared once per connection, where building the
predicate with SQLAlchemy cost every read a few ms."""

from __future__ import annotations

from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.store.records import StoredVersion
from cmfhir.store.search_sql import SearchSql

__all__ = ["read_current", "read_version"]

_COLUMNS = "SELECT r.version, r.last_updated, r.deleted, r.content::text FROM resource r "
_WHERE = "WHERE r.resource_type = $1 AND r.id = $2"
_UNRESTRICTED = _COLUMNS + _WHERE
# A version from the history; the access predicate is the same on its row (the history
# table has the columns it reads: rid, resource_type, patient_id, content).
_VERSION_COLUMNS = "SELECT h.last_updated, h.method, h.content::text FROM resource_history h "
_VERSION_WHERE = "WHERE h.resource_type = $1 AND h.id = $2 AND h.version = $3"


async def read_current(
    driver: Any, principal: Principal | None, resource_type: str, id: str
) -> StoredVersion | None:
    """The current version of `resource_type/id` if `principal` may read it (what it may
    not read is not found, exactly as what does not exist)."""
    if principal is not None and principal.unrestricted:
        row = await driver.fetchrow(_UNRESTRICTED, resource_type, id)
    else:
        sql = SearchSql(principal, reserved=2)
        where = _WHERE
        if (seen := sql.visible("r", "r")) is not None:
            where += f" AND {seen}"
        row = await driver.fetchrow(_COLUMNS + where, resource_type, id, *sql.args[2:])
    if row is None:
        return None
    return StoredVersion(resource_type, id, row[0], row[1], row[2], row[3])


async def read_version(
    driver: Any, principal: Principal | None, resource_type: str, id: str, version: int
) -> StoredVersion | None:
    """Version `version` of `resource_type/id` if `principal` may read it (as
    `Repository.vread`: the predicate applies to that version's row)."""
    sql = _VERSION_COLUMNS + _VERSION_WHERE
    if principal is not None and principal.unrestricted:
        row = await driver.fetchrow(sql, resource_type, id, version)
    else:
        narrowed = SearchSql(principal, reserved=3)
        if (seen := narrowed.visible("h", "r")) is not None:
            sql += f" AND {seen}"
        row = await driver.fetchrow(sql, resource_type, id, version, *narrowed.args[3:])
    if row is None:
        return None
    method: str = row[1]
    return StoredVersion(
        resource_type, id, version, row[0], method == "delete", row[2], method=method
    )
