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
from functools import lru_cache

from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.search.model import Include
from cmfhir.store.driver import driver_connection
from cmfhir.store.search_sql import SearchSql, literal

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


def _matches(x: str, includes: Sequence[Include]) -> str:
    """The index rows the includes follow: source type, parameter and target type, `*` or
    None meaning any; and only local references."""
    conditions: list[str] = []
    for include in includes:
        parts: list[str] = []
        if include.source_type != "*":
            parts.append(f"{x}.resource_type = {literal(include.source_type)}")
        if include.param != "*":
            parts.append(f"{x}.param = {literal(include.param)}")
        if include.target_type is not None:
            parts.append(f"{x}.target_type = {literal(include.target_type)}")
        conditions.append("(" + " AND ".join(parts) + ")" if parts else "TRUE")
    # `Patient/1` and `Patient/1/_history/2` have no scheme; `http://...` and `urn:` do.
    return f"({' OR '.join(conditions)}) AND {x}.url NOT LIKE '%:%'"


# $1, $2: the frontier's types and ids; $3, $4: those already seen; $5: room left; then
# the values of the access predicate, if any.
_FRONTIER = "unnest($1::text[], $2::text[]) AS f(resource_type, id)"
_OWN_PARAMETERS = 5


@lru_cache(maxsize=256)
def _walk_sql(forward: tuple[Include, ...], reverse: tuple[Include, ...]) -> str:
    """The rids one level of the walk reaches, as SQL text, the same for the same includes."""
    found: list[str] = []
    if forward:
        found.append(
            f"SELECT target.rid FROM {_FRONTIER} "
            "JOIN resource source ON source.resource_type = f.resource_type "
            "AND source.id = f.id "
            "JOIN idx_reference x ON x.rid = source.rid "
            "JOIN resource target ON target.resource_type = x.target_type "
            "AND target.id = x.target_id "
            f"WHERE {_matches('x', forward)}"
        )
    if reverse:
        found.append(
            f"SELECT y.rid FROM {_FRONTIER} "
            "JOIN idx_reference y ON y.target_type = f.resource_type AND y.target_id = f.id "
            f"WHERE {_matches('y', reverse)}"
        )
    return " UNION ".join(found)


def _level_sql(
    forward: tuple[Include, ...], reverse: tuple[Include, ...], principal: Principal | None
) -> tuple[str, list[object]]:
    """One level of the walk as SQL text, the same for the same includes and the same shape
    of principal (so asyncpg prepares it once per connection), and the values of the access
    predicate, bound after the walk's own."""
    # The one place where included resource rows (alias `r`) are selected: what the
    # principal may read is ANDed to this WHERE, as a condition on `r` (store/access.py).
    sql = SearchSql(principal, reserved=_OWN_PARAMETERS)
    visible = sql.visible("r", "r")
    text = (
        "SELECT r.resource_type, r.id, r.content::text FROM resource r "
        f"WHERE r.rid IN ({_walk_sql(forward, reverse)}) AND NOT r.deleted "
        f"{'' if visible is None else f'AND {visible} '}"
        "AND (r.resource_type, r.id) NOT IN "
        "(SELECT * FROM unnest($3::text[], $4::text[]) AS seen(resource_type, id)) "
        "ORDER BY r.rid LIMIT $5"
    )
    return text, sql.args[_OWN_PARAMETERS:]


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
    driver = None
    for depth in range(max_depth):
        forward = tuple(i for i in include if depth == 0 or i.iterate)
        reverse = tuple(i for i in revinclude if depth == 0 or i.iterate)
        if not frontier or not (forward or reverse):
            return out
        room = max_total - len(out.resources)
        driver = driver or await driver_connection(conn)
        text, access = _level_sql(forward, reverse, principal)
        rows = await driver.fetch(
            text,
            [k[0] for k in frontier],
            [k[1] for k in frontier],
            [k[0] for k in seen],
            [k[1] for k in seen],
            room + 1,
            *access,
        )
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
