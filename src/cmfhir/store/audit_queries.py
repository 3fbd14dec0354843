"""Reads, searches and history of the AuditEvents' own table (store/audit_events.py), for
the principal asking: what it may see is the access predicate of every other resource
(store/access_sql.py), applied to the event's row (its rid, compartment and content; the
row is given the type column the predicate reads). Granular scope filters on AuditEvent
(`patient/AuditEvent.rs?type=...`) match no event (they test index rows the table does not
have): such a scope shows nothing, never more.

A search criterion is tested on the event's index records (`idx`) with the generic
engine's value conditions (store/search_sql.py), so parameters, modifiers and prefixes mean
what they mean on any type. What the table cannot answer is refused (400): chains and
`_has` from AuditEvent, composite parameters (AuditEvent has none), `_sort` other than by
`date`, `_lastUpdated` and `_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest
from cmfhir.search.model import Criterion, ReferenceValue, SearchRequest, TokenValue
from cmfhir.store.audit_events import (
    AUDIT_FAMILIES,
    TERM_PARAMS,
    TERM_TOKENS,
    events,
    split_id,
)
from cmfhir.store.driver import driver_connection
from cmfhir.store.records import StoredVersion
from cmfhir.store.repository import Repository
from cmfhir.store.search_sql import (
    SearchPage,
    SearchSql,
    _values_condition,
    criterion_condition,
    decode_cursor,
    encode_cursor,
    literal,
)
from cmfhir.store.searcher import Searcher

__all__ = [
    "AUDIT_EVENT",
    "driver_of",
    "event_history",
    "read_event",
    "search_events",
]

AUDIT_EVENT = "AuditEvent"


_ROWS = events()


# Typed columns of a family's records, read from the JSON arrays of `idx`.
_CASTS = {"low": "timestamptz", "high": "timestamptz", "value": "numeric"}
_NUMERIC_FAMILIES = frozenset({"number", "quantity"})


async def driver_of(searches: Any) -> Any:
    """The asyncpg connection of a `Searcher` or of a `Repository` (in its transaction)."""
    if isinstance(searches, Searcher):
        return searches.driver
    if isinstance(searches, Repository):
        return await driver_connection(searches.conn)
    raise TypeError(f"No connection in {type(searches).__name__}")


def _records(kind: str, res: str) -> str:
    """The records of family `kind` of the event `res`, as a relation with the columns of
    the family's index table."""
    columns = []
    for n, name in enumerate(AUDIT_FAMILIES[kind]):
        cast = _CASTS.get(name)
        if name == "value" and kind not in _NUMERIC_FAMILIES:
            cast = None
        value = f"e->>{n}"
        columns.append(f"({value})::{cast} AS {name}" if cast else f"{value} AS {name}")
    return f"(SELECT {', '.join(columns)} FROM jsonb_array_elements({res}.idx->'{kind}') e)"


def _index_kind(crit: Criterion) -> tuple[str, str]:
    """As the generic engine: the family and the name a criterion's records are under."""
    if crit.type == "reference" and crit.modifier == "identifier":
        return "token", crit.code + ":identifier"
    if crit.type == "token" and crit.modifier == "of-type":
        return "token", crit.code + ":of-type"
    return crit.type, crit.code


def _narrowing(crit: Criterion, res: str, sql: SearchSql) -> str | None:
    """`terms` holding one of the criterion's ids or codes: what its GIN index answers."""
    if crit.missing is not None:
        return None
    if crit.type == "reference" and crit.code in TERM_PARAMS:
        if crit.modifier is not None and not crit.modifier[:1].isupper():
            return None
    elif crit.type != "token" or crit.code not in TERM_TOKENS or crit.modifier is not None:
        return None
    terms = []
    for value in crit.values:
        if isinstance(value, ReferenceValue):
            key = value.target_id if value.url is None else value.url
        elif isinstance(value, TokenValue):
            key = value.code
        else:
            return None
        if key is None:
            return None
        terms.append(f"{crit.code}|{key}")
    return f"{res}.terms && {sql.bind(terms)}::text[]" if terms else None


def _condition(crit: Criterion, res: str, sql: SearchSql) -> str:
    if crit.type == "id" and crit.modifier is None and crit.missing is None:
        # The rows holding them first, by the table's unique index on `id`.
        codes = [v.code for v in crit.values if isinstance(v, TokenValue) and v.code]
        rows = sorted({split_id(code)[0] for code in codes})
        found = criterion_condition(crit, AUDIT_EVENT, res, sql)
        return f"({res}.row_id = ANY({sql.bind(rows)}::text[]) AND {found})"
    if crit.type in ("id", "lastUpdated"):
        return criterion_condition(crit, AUDIT_EVENT, res, sql)
    if crit.type in ("chain", "has", "composite", "type"):
        raise BadRequest(
            f"'{crit.code}' cannot be searched on AuditEvent: AuditEvents are kept apart "
            "from other resources and answer their own parameters only (docs/security.md)",
            expression=[crit.code],
        )
    kind, param = _index_kind(crit)
    if kind not in AUDIT_FAMILIES:
        raise BadRequest(f"'{crit.code}' cannot be searched on AuditEvent", expression=[crit.code])
    x = sql.alias("x")
    where = f"{x}.param = {literal(param)}"
    if crit.missing is not None:
        found = f"EXISTS (SELECT 1 FROM {_records(kind, res)} {x} WHERE {where})"
        return f"NOT {found}" if crit.missing else found
    found = (
        f"EXISTS (SELECT 1 FROM {_records(kind, res)} {x} "
        f"WHERE {where} AND {_values_condition(x, crit, sql)})"
    )
    if crit.modifier == "not":
        return f"NOT {found}"
    narrowing = _narrowing(crit, res, sql)
    return f"({narrowing} AND {found})" if narrowing else found


def _where(request: SearchRequest, sql: SearchSql, permission: str = "s") -> list[str]:
    where: list[str] = []
    if (seen := sql.visible("r", permission)) is not None:
        where.append(seen)
    compartment = request.compartment
    if compartment is not None:
        x = sql.alias("x")
        params = ", ".join(literal(p) for p in compartment.params) or "NULL"
        where.append(
            f"r.terms && {sql.bind([f'{p}|{compartment.owner_id}' for p in compartment.params])}"
            f"::text[] AND EXISTS (SELECT 1 FROM {_records('reference', 'r')} {x} "
            f"WHERE {x}.param IN ({params}) AND {x}.target_type = "
            f"{literal(compartment.owner_type)} AND {x}.target_id = "
            f"{sql.bind(compartment.owner_id)})"
        )
    where.extend(_condition(c, "r", sql) for c in request.criteria)
    return where or ["TRUE"]


_SORTS = {"date": "r.recorded", "_lastUpdated": "r.last_updated", "_id": "r.id"}


def _order(request: SearchRequest) -> list[tuple[str, bool]]:
    """(expression, descending) of each sort key, ending with the rid."""
    out: list[tuple[str, bool]] = []
    for key in request.sort:
        expression = _SORTS.get(key.code)
        if expression is None:
            raise BadRequest(
                f"AuditEvents are sorted by date, _lastUpdated or _id, not '{key.code}'",
                expression=["_sort"],
            )
        out.append((expression, key.descending))
    descending = out[-1][1] if out else False
    out += [("r.rid", descending), ("r.n", descending)]
    return out


def _after(order: list[tuple[str, bool]], values: list[Any], sql: SearchSql) -> str:
    """Rows after the cursor's in the page order (keyset)."""
    options = []
    for n, (expression, descending) in enumerate(order):
        equal = [f"{e} = {sql.bind(v)}" for (e, _), v in zip(order[:n], values, strict=False)]
        step = f"{expression} {'<' if descending else '>'} {sql.bind(values[n])}"
        options.append("(" + " AND ".join([*equal, step]) + ")")
    return "(" + " OR ".join(options) + ")"


async def search_events(
    driver: Any,
    request: SearchRequest,
    *,
    count_up_to: int | None,
    principal: Principal | None,
) -> SearchPage:
    """One page of AuditEvents and the total, as store/search_sql.py `run_search` answers
    for other types: counted in full when `count_up_to` is None, given only up to it
    otherwise (0: not counted unless the first page holds them all)."""
    if request.include or request.revinclude:
        raise BadRequest(
            "_include and _revinclude are not available on AuditEvent searches",
            expression=["_include" if request.include else "_revinclude"],
        )
    order = _order(request)
    matches: list[tuple[str, str, str]] = []
    rids: list[int] = []
    next_cursor = None
    if request.count > 0:
        sql = SearchSql(principal)
        where = _where(request, sql)
        if request.cursor is not None:
            where.append(_after(order, decode_cursor(request.cursor, len(order)), sql))
        columns = ", ".join(e for e, _ in order)
        ordering = ", ".join(f"{e} DESC" if d else e for e, d in order)
        rows = await driver.fetch(
            f"SELECT {columns}, r.id, r.content::text FROM {_ROWS} r "
            f"WHERE {' AND '.join(where)} ORDER BY {ordering} LIMIT {int(request.count) + 1}",
            *sql.args,
        )
        width = len(order)
        if len(rows) > request.count:
            rows = rows[: request.count]
            next_cursor = encode_cursor(list(rows[-1][:width]))
        matches = [(AUDIT_EVENT, row[width], row[width + 1]) for row in rows]
        rids = [row[width - 2] for row in rows]
    total = None
    if request.count > 0 and next_cursor is None and request.cursor is None:
        total = None if request.total == "none" else len(matches)
    elif count_up_to is None or count_up_to > 0:
        sql = SearchSql(principal)
        bounded = "" if count_up_to is None else f" LIMIT {int(count_up_to) + 1}"
        counted: int = await driver.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM {_ROWS} r "
            f"WHERE {' AND '.join(_where(request, sql))}{bounded}) c",
            *sql.args,
        )
        total = counted if count_up_to is None or counted <= count_up_to else None
    return SearchPage(matches, next_cursor, total, rids)


async def read_event(
    driver: Any, principal: Principal | None, id: str, version: int | None = None
) -> StoredVersion | None:
    """AuditEvent `id` (its only version, 1, for a vread) if `principal` may read it."""
    if version is not None and version != 1:
        return None
    row_id, place = split_id(id)
    sql = SearchSql(principal, reserved=2)
    where = "r.n = $2"
    if (seen := sql.visible("r", "r")) is not None:
        where += f" AND {seen}"
    row = await driver.fetchrow(
        f"SELECT r.last_updated, r.content::text FROM {events('a.id = $1')} r WHERE {where}",
        row_id,
        place,
        *sql.args[2:],
    )
    if row is None:
        return None
    return StoredVersion(AUDIT_EVENT, id, 1, row[0], False, row[1], method="create")


async def event_history(
    driver: Any,
    principal: Principal | None,
    *,
    since: datetime | None,
    at: tuple[datetime, datetime] | None,
    until: datetime,
    count: int,
    cursor: Sequence[Any] | None,
) -> tuple[list[StoredVersion], tuple[datetime, int, int] | None]:
    """The AuditEvents (each a create, their only version), the last stored first (by rid
    and place in the row: the primary key's order, no index of its own): stamped up to
    `until`, after `since`, or current at `at` (stamped before its end); after `cursor`
    (last_updated, rid, place); and the cursor of the next page."""
    sql = SearchSql(principal)
    where = [f"r.last_updated <= {sql.bind(until)}"]
    if (seen := sql.visible("r", "s")) is not None:
        where.append(seen)
    if since is not None:
        where.append(f"r.last_updated > {sql.bind(since)}")
    if at is not None:
        where.append(f"r.last_updated < {sql.bind(at[1])}")
    if cursor is not None:
        rid, place = sql.bind(cursor[1]), sql.bind(cursor[2])
        where.append(f"(r.rid < {rid}::bigint OR (r.rid = {rid}::bigint AND r.n < {place}))")
    rows = await driver.fetch(
        f"SELECT r.id, r.last_updated, r.content::text, r.rid, r.n FROM {_ROWS} r "
        f"WHERE {' AND '.join(where)} "
        f"ORDER BY r.rid DESC, r.n DESC LIMIT {int(count) + 1}",
        *sql.args,
    )
    versions = [
        StoredVersion(AUDIT_EVENT, r[0], 1, r[1], False, r[2], method="create")
        for r in rows[:count]
    ]
    next_cursor = None
    if len(rows) > count and count > 0:
        next_cursor = (rows[count - 1][1], rows[count - 1][3], rows[count - 1][4])
    return versions, next_cursor
