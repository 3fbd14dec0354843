"""Search as SQL: each criterion becomes an EXISTS over its index table, values ORed inside
it, criteria ANDed; pages are keyset ranges over the sort key, never OFFSET
(https://hl7.org/fhir/R4B/search.html)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
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
    tuple_,
)

from cmfhir.errors import BadRequest
from cmfhir.search.model import (
    Compartment,
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
from cmfhir.store.schema import INDEX_TABLES, resource

__all__ = ["count_query", "decode_cursor", "encode_cursor", "page_query"]

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


def _value_condition(table: Table, crit: Criterion, value: object) -> ColumnElement[bool]:
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
            and_(
                c.value.is_not(None), _point_condition(value.prefix, c.value, value.low, value.high)
            ),
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


def _index_exists(
    table: Table, resource_type: str | None, param: str, cond: ColumnElement[bool] | None
) -> ColumnElement[bool]:
    where = [table.c.rid == r.c.rid, table.c.param == param]
    if resource_type is not None:
        where.append(table.c.resource_type == resource_type)
    if cond is not None:
        where.append(cond)
    return exists(select(literal(1)).select_from(table).where(*where))


def _criterion_condition(crit: Criterion, resource_type: str | None) -> ColumnElement[bool]:
    if crit.type == "id":
        if crit.missing is not None:
            return false() if crit.missing else true()
        ids = [v.code for v in crit.values if isinstance(v, TokenValue)]
        return r.c.id.not_in(ids) if crit.modifier == "not" else r.c.id.in_(ids)
    if crit.type == "lastUpdated":
        if crit.missing is not None:
            return false() if crit.missing else true()
        return or_(
            *(
                _point_condition(v.prefix, r.c.last_updated, v.low, v.high)
                for v in crit.values
                if isinstance(v, DateValue)
            )
        )
    kind = "token" if crit.type == "reference" and crit.modifier == "identifier" else crit.type
    table = INDEX_TABLES[kind]
    param = crit.code + ":identifier" if kind != crit.type else crit.code
    if crit.missing is not None:
        found = _index_exists(table, resource_type, param, None)
        return not_(found) if crit.missing else found
    cond = or_(*(_value_condition(table, crit, v) for v in crit.values))
    if crit.modifier == "not":
        return not_(_index_exists(table, resource_type, param, cond))
    return _index_exists(table, resource_type, param, cond)


def _compartment_condition(compartment: Compartment) -> ColumnElement[bool]:
    ref = INDEX_TABLES["reference"]
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


def _where(request: SearchRequest) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [r.c.deleted.is_(False)]
    if request.resource_type is not None:
        where.append(r.c.resource_type == request.resource_type)
    if request.compartment is not None:
        where.append(_compartment_condition(request.compartment))
    where.extend(_criterion_condition(c, request.resource_type) for c in request.criteria)
    return where


def _sort_columns(request: SearchRequest) -> tuple[list[Any], bool]:
    key = request.sort[0] if request.sort else None
    if key is None:
        return [r.c.rid], False
    column = r.c.last_updated if key.code == "_lastUpdated" else r.c.id
    return [column, r.c.rid], key.descending


def encode_cursor(values: list[Any]) -> str:
    encoded = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(encoded).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, request: SearchRequest) -> list[Any]:
    columns, _ = _sort_columns(request)
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(columns):
            raise ValueError("cursor shape")
        values: list[Any] = []
        for column, value in zip(columns, raw, strict=True):
            if column is r.c.last_updated:
                values.append(datetime.fromisoformat(value))
            elif column is r.c.rid:
                values.append(int(value))
            else:
                values.append(str(value))
        return values
    except (ValueError, TypeError) as error:
        raise BadRequest("Invalid paging cursor", expression=["_cursor"]) from error


def page_query(request: SearchRequest, limit: int) -> tuple[Select[Any], int]:
    """SELECT one page (plus one row, to know if there is a next page).

    Returns the query and the number of leading sort columns in each row before
    resource_type, id and the content text.
    """
    columns, descending = _sort_columns(request)
    query = select(*columns, r.c.resource_type, r.c.id, cast(r.c.content, Text)).where(
        *_where(request)
    )
    if request.cursor is not None:
        after = decode_cursor(request.cursor, request)
        key = tuple_(*columns)
        query = query.where(key < tuple_(*after) if descending else key > tuple_(*after))
    order = [c.desc() for c in columns] if descending else list(columns)
    return query.order_by(*order).limit(limit + 1), len(columns)


def count_query(request: SearchRequest) -> Select[Any]:
    return select(func.count()).select_from(r).where(*_where(request))
