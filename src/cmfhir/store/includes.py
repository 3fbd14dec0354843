"""`_include` and `_revinclude` as SQL (https://hl7.org/fhir/R4B/search.html#include): the
resources a page of matches points at, or that point at it, read from `idx_reference`.

One round trip per level: level 0 applies every include to the matches, each further level
applies the `:iterate` ones to what the level before brought, until nothing new comes, the
depth limit or the limit on included resources. Only local references (`Type/id`) are
followed: contained (`#id`), absolute and `urn:` references name nothing stored here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    or_,
    select,
    true,
    tuple_,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.search.model import Include
from cmfhir.store.access import visible
from cmfhir.store.schema import idx_reference, resource

__all__ = ["Include", "Included", "fetch_included"]

Key = tuple[str, str]  # resource_type, id


@dataclass(slots=True)
class Included:
    """The included resources in the order found, and why the walk stopped early, if it did:
    `capped` when the limit on included resources was reached, `deep` when `:iterate` still
    had resources to follow at the depth limit."""

    resources: list[tuple[str, str, str]] = field(default_factory=list)  # type, id, content
    capped: bool = False
    deep: bool = False


def _keys(name: str) -> Any:
    """A bound list of (resource_type, id) pairs as a relation `name(resource_type, id)`."""
    return (
        func.unnest(
            bindparam(f"{name}_types", type_=ARRAY(Text)),
            bindparam(f"{name}_ids", type_=ARRAY(Text)),
        )
        .table_valued(column("resource_type", Text), column("id", Text))
        .render_derived(name=name)
    )


def _matches(x: Any, includes: Sequence[Include]) -> ColumnElement[bool]:
    """The index rows the includes follow: source type, parameter and target type, `*` or
    None meaning any; and only local references."""
    conditions: list[ColumnElement[bool]] = []
    for include in includes:
        parts: list[ColumnElement[bool]] = []
        if include.source_type != "*":
            parts.append(x.c.resource_type == include.source_type)
        if include.param != "*":
            parts.append(x.c.param == include.param)
        if include.target_type is not None:
            parts.append(x.c.target_type == include.target_type)
        conditions.append(and_(true(), *parts))
    # `Patient/1` and `Patient/1/_history/2` have no scheme; `http://...` and `urn:` do.
    return and_(or_(*conditions), x.c.url.not_like("%:%"))


def _level_query(
    forward: Sequence[Include], reverse: Sequence[Include], principal: Principal | None
) -> Select[Any]:
    frontier = _keys("frontier")
    seen = _keys("seen")
    x = idx_reference.alias("x")
    found: list[Select[Any]] = []
    if forward:
        source = resource.alias("source")
        target = resource.alias("target")
        found.append(
            select(target.c.rid)
            .select_from(
                frontier.join(
                    source,
                    and_(
                        source.c.resource_type == frontier.c.resource_type,
                        source.c.id == frontier.c.id,
                    ),
                )
                .join(x, x.c.rid == source.c.rid)
                .join(
                    target,
                    and_(target.c.resource_type == x.c.target_type, target.c.id == x.c.target_id),
                )
            )
            .where(_matches(x, forward))
        )
    if reverse:
        found.append(
            select(x.c.rid)
            .select_from(
                frontier.join(
                    x,
                    and_(
                        x.c.target_type == frontier.c.resource_type,
                        x.c.target_id == frontier.c.id,
                    ),
                )
            )
            .where(_matches(x, reverse))
        )
    rids = union(*found).subquery() if len(found) > 1 else found[0].subquery()
    return (
        select(resource.c.resource_type, resource.c.id, cast(resource.c.content, Text))
        .where(
            resource.c.rid.in_(select(rids.c[0])),
            resource.c.deleted.is_(False),
            visible(principal, resource, "r"),
            tuple_(resource.c.resource_type, resource.c.id).not_in(
                select(seen.c.resource_type, seen.c.id)
            ),
        )
        .order_by(resource.c.rid)
        .limit(bindparam("room"))
    )


def _arrays(name: str, keys: Sequence[Key]) -> dict[str, list[str]]:
    return {f"{name}_types": [k[0] for k in keys], f"{name}_ids": [k[1] for k in keys]}


async def fetch_included(
    conn: AsyncConnection,
    matches: Sequence[Key],
    include: Sequence[Include],
    revinclude: Sequence[Include],
    *,
    max_depth: int,
    max_total: int,
    principal: Principal | None,
) -> Included:
    """The resources `include` and `revinclude` bring for `matches`, none of them a match
    and none twice, at most `max_total` of them, followed at most `max_depth` levels deep."""
    out = Included()
    seen: dict[Key, None] = dict.fromkeys(matches)
    frontier: list[Key] = list(seen)
    for depth in range(max_depth):
        forward = [i for i in include if depth == 0 or i.iterate]
        reverse = [i for i in revinclude if depth == 0 or i.iterate]
        if not frontier or not (forward or reverse):
            return out
        room = max_total - len(out.resources)
        rows = (
            await conn.execute(
                _level_query(forward, reverse, principal),
                {**_arrays("frontier", frontier), **_arrays("seen", list(seen)), "room": room + 1},
            )
        ).all()
        if len(rows) > room:
            rows = rows[:room]
            out.capped = True
        frontier = [(row[0], row[1]) for row in rows]
        seen.update(dict.fromkeys(frontier))
        out.resources.extend((row[0], row[1], row[2]) for row in rows)
        if out.capped:
            return out
    out.deep = bool(frontier) and any(i.iterate for i in (*include, *revinclude))
    return out
