"""Search as SQL: each criterion becomes an EXISTS over its index table, values ORed inside
it, criteria ANDed; pages are keyset ranges over the sort key, never OFFSET
(https://hl7.org/fhir/R4B/search.html)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

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
from cmfhir.store.access import visible
from cmfhir.store.schema import INDEX_TABLES, resource

__all__ = ["count_query", "criterion_condition", "decode_cursor", "encode_cursor", "page_query"]

r = resource.alias("r")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _range_condition(prefix: str, low: Any, high: Any, q_low: Any, q_high: Any) -> Any:
    """Compare a stored range [low, high) with a searched range [q_low, q_high)."""
    if prefix == "eq":
        return and_(low >= q_low, high <= q_high)
    if prefix == "ne":
        return not_(and_(low >= q_low, high <= q_high))
    if prefix == "gt":
        return high > q_high
    if prefix == "lt":
        return low < q_low
    if prefix == "ge":
        return high > q_low
    if prefix == "le":
        return low < q_high
    if prefix == "sa":
        return low >= q_high
    if prefix == "eb":
        return high <= q_low
    # ap: overlaps the searched range
    return and_(low < q_high, high > q_low)


def _point_condition(prefix: str, point: Any, q_low: Any, q_high: Any) -> Any:
    """Compare a single stored value with a searched range [q_low, q_high)."""
    if prefix in ("eq", "ap"):
        return and_(point >= q_low, point < q_high)
    if prefix == "ne":
        return or_(point < q_low, point >= q_high)
    if prefix in ("gt", "sa"):
        return point >= q_high
    if prefix in ("lt", "eb"):
        return point < q_low
    if prefix == "ge":
        return point >= q_low
    return point < q_high  # le


def _number_condition(value: NumberValue | QuantityValue, point: Any) -> Any:
    """eq, ne and ap use the implicit precision range of the searched value (`100` is
    [99.5, 100.5)); the comparisons use the value exactly."""
    exact = value.value
    if value.prefix == "eq":
        return and_(point >= value.low, point < value.high)
    if value.prefix == "ne":
        return or_(point < value.low, point >= value.high)
    if value.prefix == "ap":
        spread = abs(exact) / 10
        return and_(point >= exact - spread, point <= exact + spread)
    if value.prefix in ("gt", "sa"):
        return point > exact
    if value.prefix in ("lt", "eb"):
        return point < exact
    if value.prefix == "ge":
        return point >= exact
    return point <= exact


def _value_condition(table: Any, crit: Criterion, value: object) -> Any:
    c = table.c
    if isinstance(value, TokenValue):
        parts: list[ColumnElement[bool]] = []
        if value.code is not None:
            parts.append(c.code == value.code)
        if value.system == "":
            parts.append(c.system.is_(None))
        elif value.system is not None:
            parts.append(c.system == value.system)
        return and_(true(), *parts)
    if isinstance(value, StringValue):
        if crit.type == "token":  # :text
            return c.text.like(_like_escape(value.normalized) + "%")
        if crit.modifier == "exact":
            return c.exact == value.exact
        if crit.modifier == "contains":
            return c.value.like("%" + _like_escape(value.normalized) + "%")
        return c.value.like(_like_escape(value.normalized) + "%")
    if isinstance(value, DateValue):
        overlap: ColumnElement[bool] = _range_condition(
            value.prefix, c.low, c.high, value.low, value.high
        )
        return overlap
    if isinstance(value, NumberValue | QuantityValue):
        # A single value compares as a point; a Range (value null) by its bounds.
        cond = or_(
            and_(c.value.is_not(None), _number_condition(value, c.value)),
            and_(
                c.value.is_(None),
                _range_condition(value.prefix, c.low, c.high, value.low, value.high),
            ),
        )
        if isinstance(value, NumberValue):
            return cond
        extra: list[ColumnElement[bool]] = []
        if value.system is not None:
            extra.append(c.system == value.system)
        if value.code is not None:
            extra.append(or_(c.code == value.code, c.unit == value.code))
        return and_(cond, *extra)
    if isinstance(value, ReferenceValue):
        if value.url is not None:
            return c.url == value.url
        conds: list[ColumnElement[bool]] = [c.target_id == value.target_id]
        if value.target_type is not None:
            conds.append(c.target_type == value.target_type)
        return and_(*conds)
    if isinstance(value, UriValue):
        if crit.modifier == "below":
            return c.uri.like(_like_escape(value.value) + "%")
        if crit.modifier == "above":
            return literal(value.value, Text).like(func.replace(c.uri, "%", "\\%") + "%")
        return c.uri == value.value
    raise BadRequest(f"Unsupported value for '{crit.code}'", expression=[crit.code])


@cache
def _aliased(kind: str, depth: int) -> Any:
    """One alias of an index table (or of `resource`) per nesting depth, made once: building
    an alias costs more than the rest of a query, and equal aliases keep SQLAlchemy's
    statement cache warm. Sibling subqueries may share an alias; a subquery nested in
    another gets the next depth's, so it never correlates to its parent's."""
    table = resource if kind == "resource" else INDEX_TABLES[kind]
    return table.alias(f"{kind}_{depth}")


def _index_exists(
    kind: str,
    resource_type: str | None,
    param: str,
    cond_for: Any,
    res: Any,
    depth: int,
) -> ColumnElement[bool]:
    """EXISTS an index row of `res` for `param` (matching `cond_for(alias)`, if given)."""
    t = _aliased(kind, depth)
    where = [t.c.rid == res.c.rid, t.c.param == param]
    if resource_type is not None:
        where.append(t.c.resource_type == resource_type)
    if cond_for is not None:
        where.append(cond_for(t))
    return exists(select(literal(1)).select_from(t).where(*where))


@cache
def _component_alias(kind: str, depth: int, position: int) -> Any:
    """The index table of a composite's component `position` (two components may share a
    table: token and token)."""
    return INDEX_TABLES[kind].alias(f"{kind}_{depth}_c{position}")


def _composite_exists(
    value: CompositeValue, resource_type: str | None, res: Any, depth: int
) -> ColumnElement[bool]:
    """EXISTS rows of every component, from the same repetition (`grp`) of `res`."""
    where: list[ColumnElement[bool]] = []
    tables = []
    for position, component in enumerate(value.components):
        t = _component_alias(component.type, depth, position)
        tables.append(t)
        if position == 0:
            where.append(t.c.rid == res.c.rid)
        else:
            where.extend((t.c.rid == tables[0].c.rid, t.c.grp == tables[0].c.grp))
        where.append(t.c.param == component.code)
        if resource_type is not None:
            where.append(t.c.resource_type == resource_type)
        where.append(or_(*(_value_condition(t, component, v) for v in component.values)))
    return exists(select(literal(1)).select_from(*tables).where(*where))


def _column_condition(crit: Criterion, res: Any) -> Any:
    if crit.missing is not None:  # ids, types and timestamps are never missing
        return false() if crit.missing else true()
    if crit.type == "id":
        ids = [v.code for v in crit.values if isinstance(v, TokenValue)]
        return res.c.id.not_in(ids) if crit.modifier == "not" else res.c.id.in_(ids)
    if crit.type == "type":
        return res.c.resource_type.in_([v.code for v in crit.values if isinstance(v, TokenValue)])
    return or_(
        *(
            _point_condition(v.prefix, res.c.last_updated, v.low, v.high)
            for v in crit.values
            if isinstance(v, DateValue)
        )
    )


def _chain_condition(
    crit: Criterion, resource_type: str | None, res: Any, depth: int, principal: Principal | None
) -> ColumnElement[bool]:
    """The reference `crit.code` of `res` points at a live target matching the link."""
    options = []
    ref = _aliased("reference", depth)
    target = _aliased("resource", depth + 1)
    for link in crit.chain:
        where = [
            ref.c.rid == res.c.rid,
            ref.c.param == crit.code,
            ref.c.target_type == link.target_type,
            target.c.resource_type == link.target_type,
            target.c.id == ref.c.target_id,
            target.c.deleted.is_(False),
            visible(principal, target, "s"),
            criterion_condition(link.criterion, link.target_type, target, depth + 1, principal),
        ]
        if resource_type is not None:
            where.append(ref.c.resource_type == resource_type)
        options.append(exists(select(literal(1)).select_from(ref, target).where(*where)))
    return or_(*options)


def _has_condition(
    crit: Criterion, res: Any, depth: int, principal: Principal | None
) -> ColumnElement[bool]:
    """Some live `has.source_type` whose `has.param` references `res` matches the inner one."""
    assert crit.has is not None
    has = crit.has
    ref = _aliased("reference", depth)
    source = _aliased("resource", depth + 1)
    return exists(
        select(literal(1))
        .select_from(ref, source)
        .where(
            ref.c.resource_type == has.source_type,
            ref.c.param == has.param,
            ref.c.target_type == res.c.resource_type,
            ref.c.target_id == res.c.id,
            source.c.rid == ref.c.rid,
            source.c.deleted.is_(False),
            visible(principal, source, "s"),
            criterion_condition(has.criterion, has.source_type, source, depth + 1, principal),
        )
    )


def criterion_condition(
    crit: Criterion,
    resource_type: str | None,
    res: Any = None,
    depth: int = 0,
    principal: Principal | None = None,
) -> ColumnElement[bool]:
    """The SQL condition for one criterion on the resource alias `res`, itself `depth`
    subqueries deep; chains and `_has` see only what `principal` may (store/access.py)."""
    res = r if res is None else res
    if crit.type in ("id", "lastUpdated", "type"):
        column: ColumnElement[bool] = _column_condition(crit, res)
        return column
    if crit.type == "chain":
        return _chain_condition(crit, resource_type, res, depth, principal)
    if crit.type == "has":
        return _has_condition(crit, res, depth, principal)
    if crit.type == "composite":
        return or_(
            *(
                _composite_exists(v, resource_type, res, depth)
                for v in crit.values
                if isinstance(v, CompositeValue)
            )
        )
    kind = crit.type
    param = crit.code
    if crit.type == "reference" and crit.modifier == "identifier":
        kind, param = "token", crit.code + ":identifier"
    elif crit.type == "token" and crit.modifier == "of-type":
        param = crit.code + ":of-type"
    if crit.missing is not None:
        found = _index_exists(kind, resource_type, param, None, res, depth)
        return not_(found) if crit.missing else found

    def matches(t: Any) -> ColumnElement[bool]:
        return or_(*(_value_condition(t, crit, v) for v in crit.values))

    if crit.modifier == "not":
        return not_(_index_exists(kind, resource_type, param, matches, res, depth))
    return _index_exists(kind, resource_type, param, matches, res, depth)


def _compartment_condition(compartment: Compartment) -> ColumnElement[bool]:
    ref = _aliased("reference", 0)
    linked = exists(
        select(literal(1))
        .select_from(ref)
        .where(
            ref.c.rid == r.c.rid,
            ref.c.param.in_(compartment.params),
            ref.c.target_type == compartment.owner_type,
            ref.c.target_id == compartment.owner_id,
        )
    )
    # The owner itself is in its own compartment.
    itself = and_(r.c.resource_type == compartment.owner_type, r.c.id == compartment.owner_id)
    return or_(itself, linked) if compartment.params else itself


def _where(request: SearchRequest, principal: Principal | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [r.c.deleted.is_(False), visible(principal, r, "s")]
    if request.resource_type is not None:
        where.append(r.c.resource_type == request.resource_type)
    if request.compartment is not None:
        where.append(_compartment_condition(request.compartment))
    where.extend(
        criterion_condition(c, request.resource_type, principal=principal) for c in request.criteria
    )
    return where


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
    expr: Any
    descending: bool
    is_null_flag: bool = False


def _sort_components(request: SearchRequest) -> list[_Component]:
    components: list[_Component] = []
    for key in request.sort:
        if key.type == "id":
            components.append(_Component(r.c.id, key.descending))
        elif key.type == "lastUpdated":
            components.append(_Component(r.c.last_updated, key.descending))
        else:
            t = _aliased(key.type, 0)
            if key.type == "date":
                column = t.c.high if key.descending else t.c.low
            else:
                column = t.c[_SORT_VALUE[key.type]]
            aggregate = func.max(column) if key.descending else func.min(column)
            value = (
                select(aggregate)
                .where(
                    t.c.rid == r.c.rid,
                    t.c.param == key.code,
                    t.c.resource_type == request.resource_type,
                )
                .scalar_subquery()
            )
            components.append(_Component(value.is_(None), False, is_null_flag=True))
            components.append(_Component(value, key.descending))
    components.append(_Component(r.c.rid, False))
    return components


def _after(components: list[_Component], values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in the order of `components` (lexicographic)."""
    options: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for component, value in zip(components, values, strict=True):
        expr = component.expr
        if component.is_null_flag:
            later = and_(expr, true()) if value is False else false()
            same = expr if value else not_(expr)
        elif value is None:
            later, same = false(), expr.is_(None)
        else:
            later = expr < value if component.descending else expr > value
            same = expr == value
        options.append(and_(*equal_so_far, later))
        equal_so_far.append(same)
    return or_(*options)


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


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    if len(cursor) > MAX_CURSOR:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"])
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != width:
            raise ValueError("cursor shape")
        return [_decode_value(v) for v in raw]
    except (ValueError, TypeError, ArithmeticError, RecursionError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error


def page_query(
    request: SearchRequest, limit: int, principal: Principal | None
) -> tuple[Select[Any], int]:
    """SELECT one page (plus one row, to know if there is a next page).

    Returns the query and the number of leading sort values in each row before
    resource_type, id and the content text (the next cursor is made of them).
    """
    components = _sort_components(request)
    query = select(
        *(c.expr for c in components), r.c.resource_type, r.c.id, cast(r.c.content, Text)
    ).where(*_where(request, principal))
    if request.cursor is not None:
        query = query.where(_after(components, decode_cursor(request.cursor, len(components))))
    order = []
    for c in components:
        order.append(c.expr.desc() if c.descending else c.expr.asc())
    return query.order_by(*order).limit(limit + 1), len(components)


def count_query(
    request: SearchRequest, up_to: int | None, principal: Principal | None
) -> Select[Any]:
    """The number of matches; with `up_to`, counting stops past it (the answer is then
    up_to + 1), which bounds the cost on large result sets."""
    if up_to is None:
        return select(func.count()).select_from(r).where(*_where(request, principal))
    bounded = select(r.c.rid).where(*_where(request, principal)).limit(up_to + 1).subquery()
    return select(func.count()).select_from(bounded)
