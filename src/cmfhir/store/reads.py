"""The read of one current resource (https://hl7.org/fhir/R4/http.html#read) as SQL text
sent straight to asyncpg, narrowed by the principal's access predicate as text
(store/access_sql.py): the same text for every principal of one shape, prepared once per
connection, where building the predicate with SQLAlchemy cost every read a few ms."""

from __future__ import annotations

from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.store.records import StoredVersion
from cmfhir.store.search_sql import SearchSql

__all__ = ["read_current"]

_COLUMNS = "SELECT r.version, r.last_updated, r.deleted, r.content::text FROM resource r "
_WHERE = "WHERE r.resource_type = $1 AND r.id = $2"
_UNRESTRICTED = _COLUMNS + _WHERE


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
