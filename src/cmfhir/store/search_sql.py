"""Search as SQL (https://hl7.org/fhir/R4B/search.html): each criterion becomes an EXISTS over
its index table, values ORed inside it, criteria ANDed; pages are keyset ranges over the sort
key, never OFFSET.

The SQL is written as text, with the search's values bound as `$n` and the names that shape
it (resource types, parameter codes) written in as literals, so the same query shape always
gives the same text: asyncpg prepares it once per connection (its statement cache is keyed
by the text) and later searches of that shape only bind values. Building the statement this
way takes microseconds; building it with SQLAlchemy took a third of a search's CPU.

A page in the default order (by `rid`) is driven from the index rows of its most selective
criterion: the rids come from that index (`(resource_type, param, value..., rid)` yields them
in order), and only the page's resources are read.

What the principal may see (store/access.py) is ANDed wherever resource rows are chosen:
the page's and the count's rows, and the targets of chains and sources of `_has`. It is
`visible` itself, compiled to text once per principal with its values bound
(store/access_sql.py); an unrestricted principal adds nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest
from cmfhir.search.model import (
    Compartment,
    CompositeValue,
    Criterion,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchRequest,
    StringValue,
    TokenValue,
    UriValue,
)
from cmfhir.store.access_sql import visible_condition
from cmfhir.store.schema import INDEX_TABLES

__all__ = [
    "FetchPage",
    "SearchPage",
    "SearchSql",
    "Statement",
    "count_statement",
    "counts_from_index",
    "criterion_condition",
    "decode_cursor",
    "encode_cursor",
    "literal",
    "page_statement",
    "run_search",
]


class SearchSql:
    """The values a statement binds (`bind` gives each its `$n`), fresh table aliases, and
    the principal whose access predicate narrows the resource rows chosen. The first
    `reserved` placeholders are the caller's own (bound by it, not held here)."""

    __slots__ = ("_aliases", "args", "per_row", "principal")

    def __init__(self, principal: Principal | None, *, reserved: int = 0) -> None:
        self.principal = principal
        self.args: list[Any] = [None] * reserved
        self._aliases = 0
        # Write EXISTS as a scalar subquery that PostgreSQL evaluates for each row it is
        # given (see `exists`), not as a join or a hash over all of the subquery's rows.
        self.per_row = False

    def bind(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def alias(self, prefix: str) -> str:
        self._aliases += 1
        return f"{prefix}{self._aliases}"

    def sees_all(self, permission: str) -> bool:
        """Whether the principal's access predicate adds no condition (`visible` is None)."""
        return visible_condition(self.principal, permission) is None

    def visible(self, alias: str, permission: str) -> str | None:
        """The principal's access predicate on the `resource` row `alias` ("r": read,
        "s": search), its values bound here; None for a principal that sees everything."""
        condition = visible_condition(self.principal, permission)
        return None if condition is None else condition.render_into(alias, self.args)


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    args: tuple[Any, ...]


def exists(sql: SearchSql, select_one: str) -> str:
    """EXISTS (`SELECT 1 ...`). In `per_row` mode a scalar subquery instead: PostgreSQL may
    turn an EXISTS into a join or a hash over every row the subquery matches (thousands for
    `date=ge2025`), where probing the index for each candidate of a page takes a few."""
    if sql.per_row:
        return f"({select_one} LIMIT 1) IS NOT NULL"
    return f"EXISTS ({select_one})"


def literal(text: str) -> str:
    """A name written into the SQL (a resource type, a parameter code): quoted as a standard
    string literal. Such names come from the registry and the type list, never free text,
    but they are quoted all the same."""
    if "\x00" in text:
        raise BadRequest("A search name holds a NUL character")
    return "'" + text.replace("'", "''") + "'"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _table(kind: str) -> str:
    return INDEX_TABLES[kind].name


def _range_condition(
    prefix: str, low: str, high: str, q_low: Any, q_high: Any, sql: SearchSql
) -> str:
    """Compare a stored range [low, high) with a searched range [q_low, q_high) (bound only
    where used: a placeholder the statement does not use has no type)."""
    if prefix in ("eq", "ne"):
        inside = f"({low} >= {sql.bind(q_low)} AND {high} <= {sql.bind(q_high)})"
        return inside if prefix == "eq" else f"NOT {inside}"
    if prefix == "gt":
        return f"{high} > {sql.bind(q_high)}"
    if prefix == "lt":
        return f"{low} < {sql.bind(q_low)}"
    if prefix == "ge":
        return f"{high} > {sql.bind(q_low)}"
    if prefix == "le":
        return f"{low} < {sql.bind(q_high)}"
    if prefix == "sa":
        return f"{low} >= {sql.bind(q_high)}"
    if prefix == "eb":
        return f"{high} <= {sql.bind(q_low)}"
    # ap: overlaps the searched range
    return f"({low} < {sql.bind(q_high)} AND {high} > {sql.bind(q_low)})"


def _point_condition(prefix: str, point: str, q_low: Any, q_high: Any, sql: SearchSql) -> str:
    """Compare a single stored value with a searched range [q_low, q_high)."""
    if prefix in ("eq", "ap"):
        return f"({point} >= {sql.bind(q_low)} AND {point} < {sql.bind(q_high)})"
    if prefix == "ne":
        return f"({point} < {sql.bind(q_low)} OR {point} >= {sql.bind(q_high)})"
    if prefix in ("gt", "sa"):
        return f"{point} >= {sql.bind(q_high)}"
    if prefix in ("lt", "eb"):
        return f"{point} < {sql.bind(q_low)}"
    if prefix == "ge":
        return f"{point} >= {sql.bind(q_low)}"
    return f"{point} < {sql.bind(q_high)}"  # le


def _number_condition(value: NumberValue | QuantityValue, point: str, sql: SearchSql) -> str:
    """eq, ne and ap use the implicit precision range of the searched value (`100` is
    [99.5, 100.5)); the comparisons use the value exactly."""
    exact = value.value
    if value.prefix == "eq":
        return f"({point} >= {sql.bind(value.low)} AND {point} < {sql.bind(value.high)})"
    if value.prefix == "ne":
        return f"({point} < {sql.bind(value.low)} OR {point} >= {sql.bind(value.high)})"
    if value.prefix == "ap":
        spread = abs(exact) / 10
        return f"({point} >= {sql.bind(exact - spread)} AND {point} <= {sql.bind(exact + spread)})"
    operator = {"gt": ">", "sa": ">", "lt": "<", "eb": "<", "ge": ">="}.get(value.prefix, "<=")
    return f"{point} {operator} {sql.bind(exact)}"


def _prefix_range(t: str, column: str, normalized: str, sql: SearchSql) -> str:
    """Starts-with as LIKE plus the range the `text_pattern_ops` index can scan: a prepared
    statement's generic plan cannot derive that range from a bound LIKE pattern."""
    like = f"{t}.{column} LIKE {sql.bind(_like_escape(normalized) + '%')}"
    if not normalized or ord(normalized[-1]) >= 0x10FFFF:
        return like
    upper = normalized[:-1] + chr(ord(normalized[-1]) + 1)
    return (
        f"({t}.{column} ~>=~ {sql.bind(normalized)} AND {t}.{column} ~<~ {sql.bind(upper)} "
        f"AND {like})"
    )


def _value_condition(t: str, crit: Criterion, value: object, sql: SearchSql) -> str:
    if isinstance(value, TokenValue):
        parts: list[str] = []
        if value.code is not None:
            parts.append(f"{t}.code = {sql.bind(value.code)}")
        if value.system == "":
            parts.append(f"{t}.system IS NULL")
        elif value.system is not None:
            parts.append(f"{t}.system = {sql.bind(value.system)}")
        return "(" + " AND ".join(parts) + ")" if parts else "TRUE"
    if isinstance(value, StringValue):
        if crit.type == "token":  # :text
            return f"{t}.text LIKE {sql.bind(_like_escape(value.normalized) + '%')}"
        if crit.modifier == "exact":
            return f"{t}.exact = {sql.bind(value.exact)}"
        if crit.modifier == "contains":
            return f"{t}.value LIKE {sql.bind('%' + _like_escape(value.normalized) + '%')}"
        return _prefix_range(t, "value", value.normalized, sql)
    if isinstance(value, DateValue):
        return _range_condition(value.prefix, f"{t}.low", f"{t}.high", value.low, value.high, sql)
    if isinstance(value, NumberValue | QuantityValue):
        # A single value compares as a point; a Range (value null) by its bounds.
        point = _number_condition(value, f"{t}.value", sql)
        bounds = _range_condition(value.prefix, f"{t}.low", f"{t}.high", value.low, value.high, sql)
        cond = f"(({t}.value IS NOT NULL AND {point}) OR ({t}.value IS NULL AND {bounds}))"
        if isinstance(value, NumberValue):
            return cond
        extra = [cond]
        if value.system is not None:
            extra.append(f"{t}.system = {sql.bind(value.system)}")
        if value.code is not None:
            code = sql.bind(value.code)
            extra.append(f"({t}.code = {code} OR {t}.unit = {code})")
        return "(" + " AND ".join(extra) + ")"
    if isinstance(value, ReferenceValue):
        if value.url is not None:
            return f"{t}.url = {sql.bind(value.url)}"
        target = f"{t}.target_id = {sql.bind(value.target_id)}"
        if value.target_type is not None:
            return f"({target} AND {t}.target_type = {sql.bind(value.target_type)})"
        return target
    if isinstance(value, UriValue):
        if crit.modifier == "below":
            return f"{t}.uri LIKE {sql.bind(_like_escape(value.value) + '%')}"
        if crit.modifier == "above":
            return f"{sql.bind(value.value)}::text LIKE replace({t}.uri, '%', '\\%') || '%'"
        return f"{t}.uri = {sql.bind(value.value)}"
    raise BadRequest(f"Unsupported value for '{crit.code}'", expression=[crit.code])


def _values_condition(t: str, crit: Criterion, sql: SearchSql) -> str:
    return "(" + " OR ".join(_value_condition(t, crit, v, sql) for v in crit.values) + ")"


def _param_condition(t: str, params: Sequence[str]) -> str:
    """The index rows of `t` under one of `params` (the names a parameter's rows are
    stored under: its own, or those `Criterion.stored` names)."""
    if len(params) == 1:
        return f"{t}.param = {literal(params[0])}"
    return f"{t}.param IN ({', '.join(literal(p) for p in params)})"


def _index_exists(
    kind: str,
    resource_type: str | None,
    params: Sequence[str],
    cond_for: Callable[[str], str] | None,
    res: str,
    sql: SearchSql,
) -> str:
    """EXISTS an index row of `res` under `params` (matching `cond_for(alias)`, if given)."""
    t = sql.alias("x")
    where = [f"{t}.rid = {res}.rid", _param_condition(t, params)]
    if resource_type is not None:
        where.append(f"{t}.resource_type = {literal(resource_type)}")
    if cond_for is not None:
        where.append(cond_for(t))
    return exists(sql, f"SELECT 1 FROM {_table(kind)} {t} WHERE {' AND '.join(where)}")


def _composite_exists(
    value: CompositeValue, resource_type: str | None, res: str, sql: SearchSql
) -> str:
    """EXISTS rows of every component, from the same repetition (`grp`) of `res`. A
    composite stored as others' (`combo-code-value-quantity`) reads their components' rows:
    `grp` numbers every group of a resource apart, so one `grp` is one repetition of one
    of them."""
    where: list[str] = []
    tables: list[str] = []
    first = ""
    for position, component in enumerate(value.components):
        t = sql.alias("c")
        tables.append(f"{_table(component.type)} {t}")
        if position == 0:
            first = t
            where.append(f"{t}.rid = {res}.rid")
        else:
            where.extend((f"{t}.rid = {first}.rid", f"{t}.grp = {first}.grp"))
        where.append(_param_condition(t, component.stored or (component.code,)))
        if resource_type is not None:
            where.append(f"{t}.resource_type = {literal(resource_type)}")
        where.append(_values_condition(t, component, sql))
    return exists(sql, f"SELECT 1 FROM {', '.join(tables)} WHERE {' AND '.join(where)}")


def _column_condition(crit: Criterion, res: str, sql: SearchSql) -> str:
    if crit.missing is not None:  # ids, types and timestamps are never missing
        return "FALSE" if crit.missing else "TRUE"
    if crit.type == "id":
        ids = sql.bind([v.code for v in crit.values if isinstance(v, TokenValue)])
        return (
            f"{res}.id <> ALL({ids}::text[])"
            if crit.modifier == "not"
            else (f"{res}.id = ANY({ids}::text[])")
        )
    if crit.type == "type":
        types = sql.bind([v.code for v in crit.values if isinstance(v, TokenValue)])
        return f"{res}.resource_type = ANY({types}::text[])"
    points = [
        _point_condition(v.prefix, f"{res}.last_updated", v.low, v.high, sql)
        for v in crit.values
        if isinstance(v, DateValue)
    ]
    return "(" + " OR ".join(points) + ")" if points else "FALSE"


def _chain_condition(crit: Criterion, resource_type: str | None, res: str, sql: SearchSql) -> str:
    """The reference `crit.code` of `res` points at a live target matching the link."""
    options = []
    for link in crit.chain:
        x = sql.alias("x")
        target = sql.alias("t")
        where = [
            f"{x}.rid = {res}.rid",
            f"{x}.param = {literal(crit.code)}",
            f"{x}.target_type = {literal(link.target_type)}",
            f"{target}.resource_type = {literal(link.target_type)}",
            f"{target}.id = {x}.target_id",
            f"NOT {target}.deleted",
            criterion_condition(link.criterion, link.target_type, target, sql),
        ]
        if (seen := sql.visible(target, "s")) is not None:
            where.append(seen)
        if resource_type is not None:
            where.append(f"{x}.resource_type = {literal(resource_type)}")
        options.append(
            exists(
                sql,
                f"SELECT 1 FROM idx_reference {x}, resource {target} WHERE {' AND '.join(where)}",
            )
        )
    return "(" + " OR ".join(options) + ")" if options else "FALSE"


def _has_condition(crit: Criterion, res: str, sql: SearchSql) -> str:
    """Some live `has.source_type` whose `has.param` references `res` matches the inner one."""
    assert crit.has is not None
    has = crit.has
    x = sql.alias("x")
    if _on_rid_only(has.criterion) and sql.sees_all("s"):
        # Index rows exist for live resources only: with nothing to test on the source's
        # row (its id, type, timestamps, what the principal may see), its index rows say
        # all, and the row is not read (a care manager's members: a third of the buffers).
        where = [
            f"{x}.resource_type = {literal(has.source_type)}",
            f"{x}.param = {literal(has.param)}",
            f"{x}.target_type = {res}.resource_type",
            f"{x}.target_id = {res}.id",
            criterion_condition(has.criterion, has.source_type, x, sql),
        ]
        return exists(sql, f"SELECT 1 FROM idx_reference {x} WHERE {' AND '.join(where)}")
    source = sql.alias("s")
    where = [
        f"{x}.resource_type = {literal(has.source_type)}",
        f"{x}.param = {literal(has.param)}",
        f"{x}.target_type = {res}.resource_type",
        f"{x}.target_id = {res}.id",
        f"{source}.rid = {x}.rid",
        f"NOT {source}.deleted",
        criterion_condition(has.criterion, has.source_type, source, sql),
    ]
    if (seen := sql.visible(source, "s")) is not None:
        where.append(seen)
    return exists(
        sql, f"SELECT 1 FROM idx_reference {x}, resource {source} WHERE {' AND '.join(where)}"
    )


def _index_kind(crit: Criterion) -> tuple[str, tuple[str, ...]]:
    """The index table family and the parameter names a criterion's rows are under."""
    params = crit.stored or (crit.code,)
    if crit.type == "reference" and crit.modifier == "identifier":
        return "token", tuple(p + ":identifier" for p in params)
    if crit.type == "token" and crit.modifier == "of-type":
        return "token", tuple(p + ":of-type" for p in params)
    return crit.type, params


def criterion_condition(
    crit: Criterion, resource_type: str | None, res: str, sql: SearchSql
) -> str:
    """The SQL condition for one criterion on the resource alias `res`."""
    if crit.type in ("id", "lastUpdated", "type"):
        return _column_condition(crit, res, sql)
    if crit.type == "chain":
        return _chain_condition(crit, resource_type, res, sql)
    if crit.type == "has":
        return _has_condition(crit, res, sql)
    if crit.type == "composite":
        options = [
            _composite_exists(v, resource_type, res, sql)
            for v in crit.values
            if isinstance(v, CompositeValue)
        ]
        return "(" + " OR ".join(options) + ")" if options else "FALSE"
    kind, params = _index_kind(crit)
    if crit.missing is not None:
        found = _index_exists(kind, resource_type, params, None, res, sql)
        return f"NOT {found}" if crit.missing else found

    def matches(t: str) -> str:
        return _values_condition(t, crit, sql)

    found = _index_exists(kind, resource_type, params, matches, res, sql)
    return f"NOT {found}" if crit.modifier == "not" else found


def _compartment_condition(compartment: Compartment, sql: SearchSql) -> str:
    owner_type = literal(compartment.owner_type)
    owner_id = sql.bind(compartment.owner_id)
    # The owner itself is in its own compartment.
    itself = f"(r.resource_type = {owner_type} AND r.id = {owner_id})"
    if not compartment.params:
        return itself
    x = sql.alias("x")
    params = ", ".join(literal(p) for p in compartment.params)
    linked = (
        f"EXISTS (SELECT 1 FROM idx_reference {x} WHERE {x}.rid = r.rid "
        f"AND {x}.param IN ({params}) AND {x}.target_type = {owner_type} "
        f"AND {x}.target_id = {owner_id})"
    )
    return f"({itself} OR {linked})"


# -- the page driven from index rows ---------------------------------------------------------
# Criteria an index can answer in rid order (or nearly), most selective kinds first.
_DRIVE_RANK = {"reference": 0, "token": 1, "uri": 2, "string": 3, "quantity": 4, "number": 4}


def _drive_rank(crit: Criterion) -> int | None:
    if crit.missing is not None or crit.modifier in ("not", "text", "contains", "above"):
        return None
    if crit.type == "string" and crit.modifier == "exact":
        return 2
    return _DRIVE_RANK.get(_index_kind(crit)[0]) if crit.type in _DRIVE_RANK else None


def _driver(request: SearchRequest) -> Criterion | None:
    """The criterion whose index rows pick the page, if the page is in rid order."""
    if request.sort or request.resource_type is None:
        return None
    ranked = [
        (rank, n) for n, c in enumerate(request.criteria) if (rank := _drive_rank(c)) is not None
    ]
    return request.criteria[min(ranked)[1]] if ranked else None


def _on_rid_only(crit: Criterion) -> bool:
    """Whether a criterion's condition needs only the resource's rid (its index rows), not
    the resource row itself (its id, type or timestamps)."""
    return crit.type not in ("id", "lastUpdated", "type", "has")


def _driven_rids(
    request: SearchRequest,
    driver: Criterion,
    after: str | None,
    sql: SearchSql,
    *,
    first: int | None = None,
) -> str:
    """The rids (no repeats, in order) of the resources whose index rows match `driver`
    and whose other index rows match the other criteria that need only a rid.

    Those other criteria are tested per candidate (`SearchSql.per_row`): the candidates
    come in rid order from the driver's index, and the page stops after `_count + 1` of them
    pass.

    A driver whose rows are under several names (`Criterion.stored`) reads each name's rows
    apart. PostgreSQL plans their union for all of its rows (sorting every match's rid and
    probing the other criteria for each), so with `first` (the page needs only the first
    ones, and nothing else removes any) each name gives only its first `first` rids: the
    first `first` of the union are among them.
    """
    assert request.resource_type is not None
    kind, params = _index_kind(driver)
    if len(params) == 1:
        return _rids_under(request, driver, kind, params, after, sql)
    branches = []
    for param in params:
        branch = _rids_under(request, driver, kind, (param,), after, sql)
        branches.append(f"({branch} ORDER BY 1 LIMIT {int(first)})" if first else branch)
    d = sql.alias("d")
    return f"SELECT DISTINCT {d}.rid FROM ({' UNION ALL '.join(branches)}) {d}"


def _rids_under(
    request: SearchRequest,
    driver: Criterion,
    kind: str,
    params: tuple[str, ...],
    after: str | None,
    sql: SearchSql,
) -> str:
    """`_driven_rids` from the rows under `params`."""
    assert request.resource_type is not None
    d = sql.alias("d")
    where = [
        f"{d}.resource_type = {literal(request.resource_type)}",
        _param_condition(d, params),
        _values_condition(d, driver, sql),
    ]
    if after is not None:
        where.append(f"{d}.rid > {after}")
    sql.per_row = True
    where.extend(
        criterion_condition(c, request.resource_type, d, sql)
        for c in request.criteria
        if c is not driver and _on_rid_only(c)
    )
    sql.per_row = False
    return f"SELECT DISTINCT {d}.rid FROM {_table(kind)} {d} WHERE {' AND '.join(where)}"


# -- sorting and keyset paging ---------------------------------------------------------------
# A sort key by a search parameter is the smallest (ascending) or largest (descending) of the
# resource's index values for it; resources without one come last. The page cursor holds the
# sort values of the last row; the next page is everything after it in that order.

_SORT_VALUE = {
    "string": "value",
    "token": "code",
    "number": "value",
    "quantity": "value",
    "reference": "url",
    "uri": "uri",
}


@dataclass(frozen=True, slots=True)
class _Component:
    expr: str
    descending: bool
    is_null_flag: bool = False


def _sort_components(request: SearchRequest, sql: SearchSql) -> list[_Component]:
    components: list[_Component] = []
    for key in request.sort:
        if key.type == "id":
            components.append(_Component("r.id", key.descending))
        elif key.type == "lastUpdated":
            components.append(_Component("r.last_updated", key.descending))
        else:
            t = sql.alias("o")
            if key.type == "date":
                column = "high" if key.descending else "low"
            else:
                column = _SORT_VALUE[key.type]
            aggregate = "max" if key.descending else "min"
            where = [f"{t}.rid = r.rid", _param_condition(t, key.stored or (key.code,))]
            if request.resource_type is not None:
                where.append(f"{t}.resource_type = {literal(request.resource_type)}")
            value = (
                f"(SELECT {aggregate}({t}.{column}) FROM {_table(key.type)} {t} "
                f"WHERE {' AND '.join(where)})"
            )
            components.append(_Component(f"{value} IS NULL", False, is_null_flag=True))
            components.append(_Component(value, key.descending))
    components.append(_Component("r.rid", False))
    return components


def _after(components: list[_Component], values: list[Any], sql: SearchSql) -> str:
    """Rows strictly after `values` in the order of `components` (lexicographic)."""
    options: list[str] = []
    equal_so_far: list[str] = []
    for component, value in zip(components, values, strict=True):
        expr = component.expr
        if component.is_null_flag:
            later = f"({expr})" if value is False else "FALSE"
            same = f"({expr})" if value else f"NOT ({expr})"
        elif value is None:
            later, same = "FALSE", f"{expr} IS NULL"
        else:
            bound = sql.bind(value)
            later = f"{expr} < {bound}" if component.descending else f"{expr} > {bound}"
            same = f"{expr} = {bound}"
        options.append("(" + " AND ".join([*equal_so_far, later]) + ")")
        equal_so_far.append(same)
    return "(" + " OR ".join(options) + ")"


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "t" in value:
            return datetime.fromisoformat(value["t"])
        if "d" in value:
            return Decimal(value["d"])
        raise ValueError("cursor value")
    return value


# A cursor holds a few sort values; anything much longer was not made by this server.
MAX_CURSOR = 4096


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    if len(cursor) > MAX_CURSOR:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"])
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != width:
            raise ValueError("cursor shape")
        values = [_decode_value(v) for v in raw]
    except (ValueError, TypeError, ArithmeticError, RecursionError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error
    if width == 1 and not isinstance(values[0], int):  # the rid of the default order
        raise BadRequest("Invalid paging cursor", expression=["_cursor"])
    return values


# -- the statements --------------------------------------------------------------------------


def _resource_rows(request: SearchRequest, sql: SearchSql, *, driven: bool = False) -> list[str]:
    """The WHERE conditions on the matched resource rows (alias `r`) of the page and count
    queries: the one place where a search selects resource rows. What the principal may
    search is ANDed here, as a condition on `r`. With `driven`, the criteria that need only
    a rid are left out (`_driven_rids` applies them)."""
    where = ["NOT r.deleted"]
    if (seen := sql.visible("r", "s")) is not None:
        where.append(seen)
    if request.resource_type is not None:
        where.append(f"r.resource_type = {literal(request.resource_type)}")
    if request.compartment is not None:
        where.append(_compartment_condition(request.compartment, sql))
    where.extend(
        criterion_condition(c, request.resource_type, "r", sql)
        for c in request.criteria
        if not (driven and _on_rid_only(c))
    )
    return where


def _live_of_type(request: SearchRequest) -> list[str]:
    return ["NOT r.deleted", f"r.resource_type = {literal(request.resource_type or '')}"]


def page_statement(
    request: SearchRequest,
    limit: int,
    principal: Principal | None,
    *,
    count_up_to: int | None = None,
) -> tuple[Statement, int]:
    """SELECT one page (plus one row, to know if there is a next page).

    Returns the statement and the number of leading sort values in each row before
    resource_type, id and the content text (the next cursor is made of them). With
    `count_up_to` (only for a search whose matches `counts_from_index`; any other raises
    ValueError), each row ends with the number of matches, counted up to `count_up_to + 1`
    from the index rows alone: once per statement (an uncorrelated subquery), in the
    page's round trip.
    """
    sql = SearchSql(principal)
    driver = _driver(request)
    if driver is not None:
        assert request.resource_type is not None
        after = None
        if request.cursor is not None:
            after = sql.bind(decode_cursor(request.cursor, 1)[0])
        # Index rows exist for live resources only, of their type: with nothing to test on
        # the resource rows, the page's rids are the first ones the index rows give.
        only = (
            sql.sees_all("s")
            and request.compartment is None
            and all(_on_rid_only(c) for c in request.criteria)
        )
        rids = _driven_rids(request, driver, after, sql, first=int(limit) + 1 if only else None)
        where = _resource_rows(request, sql, driven=True)
        counted = ""
        if count_up_to is not None:
            if any(c is not driver for c in request.criteria) or where != _live_of_type(request):
                raise ValueError("Only the matches of one criterion's index rows are counted")
            matched = _driven_rids(request, driver, None, sql)
            counted = f", (SELECT count(*) FROM ({matched} LIMIT {int(count_up_to) + 1}) c)"
        text = (
            f"SELECT r.rid, r.resource_type, r.id, r.content::text{counted} FROM ({rids}) m "
            f"JOIN resource r ON r.rid = m.rid WHERE {' AND '.join(where)} "
            f"ORDER BY m.rid LIMIT {int(limit) + 1}"
        )
        return Statement(text, tuple(sql.args)), 1
    if count_up_to is not None:
        raise ValueError("Only the matches of one criterion's index rows are counted")
    components = _sort_components(request, sql)
    where = _resource_rows(request, sql)
    if request.cursor is not None:
        where.append(_after(components, decode_cursor(request.cursor, len(components)), sql))
    order = ", ".join(f"{c.expr} DESC" if c.descending else c.expr for c in components)
    text = (
        f"SELECT {', '.join(c.expr for c in components)}, r.resource_type, r.id, "
        f"r.content::text FROM resource r WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT {int(limit) + 1}"
    )
    return Statement(text, tuple(sql.args)), len(components)


def counts_from_index(request: SearchRequest, principal: Principal | None) -> bool:
    """Whether the matches can be counted from the index rows of one criterion alone: one
    criterion that drives the page, no other condition on the rid or the resource row. Any
    other count tests each candidate (a probe of another index, or the resource row)."""
    driver = _driver(request)
    if driver is None or any(c is not driver for c in request.criteria):
        return False
    return _resource_rows(request, SearchSql(principal), driven=True) == _live_of_type(request)


def count_statement(
    request: SearchRequest, up_to: int | None, principal: Principal | None
) -> Statement:
    """The number of matches; with `up_to`, counting stops past it (the answer is then
    up_to + 1), which bounds the cost on large result sets."""
    sql = SearchSql(principal)
    driver = _driver(request)
    if driver is not None:
        rids = _driven_rids(request, driver, None, sql)
        where = _resource_rows(request, sql, driven=True)
        if where == _live_of_type(request):
            # Index rows exist for live resources only, of their own type: with no other
            # condition on the resource row, counting the rids is counting the matches.
            bounded = f" LIMIT {int(up_to) + 1}" if up_to is not None else ""
            return Statement(f"SELECT count(*) FROM ({rids}{bounded}) c", tuple(sql.args))
        source = f"({rids}) m JOIN resource r ON r.rid = m.rid"
    else:
        where = _resource_rows(request, sql)
        source = "resource r"
    matches = f"SELECT 1 FROM {source} WHERE {' AND '.join(where)}"
    if up_to is not None:
        matches += f" LIMIT {int(up_to) + 1}"
    return Statement(f"SELECT count(*) FROM ({matches}) c", tuple(sql.args))


# Runs the page statement (its width, and whether its rows end with the bounded count) and
# gives back its rows, the same rows `driver.fetch` would (trailing columns may follow).
FetchPage = Callable[[Statement, int, bool], Awaitable[Sequence[Any]]]


@dataclass(slots=True)
class SearchPage:
    matches: list[tuple[str, str, str]]  # resource_type, id, content text
    next_cursor: str | None
    total: int | None
    rids: list[int] = field(default_factory=list)  # of the matches, in their order


async def run_search(
    driver: Any,
    request: SearchRequest,
    *,
    count_up_to: int | None,
    principal: Principal | None,
    fetch_page: FetchPage | None = None,
) -> SearchPage:
    """One page of matches (`request.count` of them) and the total, on the asyncpg
    connection `driver`, of what `principal` may see: counted in full when `count_up_to`
    is None; otherwise given only if at most `count_up_to` (0: not counted), and counted
    only when the count reads one criterion's index rows alone (`counts_from_index`). A
    count that tests each candidate (a second criterion, `_id`, a sort, an access
    predicate) costs one probe per candidate, up to the bound: 17 ms for
    `Observation?code=X&date=ge2025` at 1,000 members against 0.6 ms for its page, so it
    is made only when asked for (`_total=accurate`). A first page that holds every match
    knows its total without counting; a first page that does not counts from the index in
    its own statement (`page_statement`'s `count_up_to`), one round trip for both."""
    matches: list[tuple[str, str, str]] = []
    rids: list[int] = []
    next_cursor = None
    # A first page's bounded count from the index rows rides in the page's own statement:
    # one round trip, not two.
    indexed = count_up_to is not None and count_up_to > 0 and counts_from_index(request, principal)
    along = indexed and request.count > 0 and request.cursor is None
    counted_along: int | None = None
    if request.count > 0:
        page, width = page_statement(
            request, request.count, principal, count_up_to=count_up_to if along else None
        )
        if fetch_page is None:
            rows = await driver.fetch(page.sql, *page.args)
        else:  # e.g. with the first level of `_include`s in the same statement
            rows = await fetch_page(page, width, along)
        if along and rows:
            counted_along = rows[0][width + 3]
        if len(rows) > request.count:
            rows = rows[: request.count]
            next_cursor = encode_cursor(list(rows[-1][:width]))
        matches = [(row[width], row[width + 1], row[width + 2]) for row in rows]
        rids = [row[width - 1] for row in rows]  # every order ends with the rid
    total = None
    if request.count > 0 and next_cursor is None and request.cursor is None:
        total = None if request.total == "none" else len(matches)
    elif counted_along is not None:
        assert count_up_to is not None
        total = counted_along if counted_along <= count_up_to else None
    elif count_up_to is None or indexed:
        count = count_statement(request, count_up_to, principal)
        counted: int = await driver.fetchval(count.sql, *count.args)
        total = counted if count_up_to is None or counted <= count_up_to else None
    return SearchPage(matches, next_cursor, total, rids)
