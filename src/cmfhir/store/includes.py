"""`_include` and `_revinclude` as SQL (https://hl7.org/fhir/R4B/search.html#include): the
resources a page of matches points at, or that point at it, read from `idx_reference`.

One round trip per level: level 0 applies every include to the matches, each further level
applies the `:iterate` ones to what the level before brought, until nothing new comes, the
depth limit or the limit on included resources. Only local references (`Type/id`) are
followed: contained (`#id`), absolute and `urn:` references name nothing stored here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.search.model import Include
from cmfhir.store.driver import driver_connection
from cmfhir.store.search_sql import SearchSql, Statement, literal

__all__ = ["Include", "Included", "Key", "fetch_included", "walk_included", "with_first_level"]

Key = tuple[int, str, str]  # rid, resource_type, id


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


# $1: the frontier's rids; $2: the rids already seen; $3: room left; with `_revinclude`s,
# $4, $5: the frontier's types and ids; then the values of the access predicate, if any.
# The lists are bound as one text each, split in SQL: asyncpg encodes a list element by
# element, each with an abstract-class check in Python, which cost a level of 50 matches
# about 55 us of the server's CPU, twice what the text takes. Rids are digits, types
# letters and ids `[A-Za-z0-9.-]` (https://hl7.org/fhir/R4B/datatypes.html#id): none
# holds a comma.
# `_include` goes from the rids (the page's rows carry them): its sources are not looked up
# again. `_revinclude` goes from the types and ids, which PostgreSQL matches on the index of
# `(resource_type, param, target_id, target_type, rid)`; joined to the sources' rows instead,
# it took the index of `(target_type, target_id)` and read every reference to each member
# (9.6 ms against 0.8 for a 20-member page at 1,000 members).
_RIDS = "string_to_array($1::text, ',')::bigint[]"
_SEEN = "string_to_array($2::text, ',')::bigint[]"
_FORWARD_FRONTIER = f"unnest({_RIDS}) AS f(rid)"
_REVERSE_FRONTIER = (
    "unnest(string_to_array($4::text, ','), string_to_array($5::text, ',')) AS g(resource_type, id)"
)


@lru_cache(maxsize=256)
def _walk_sql(
    forward: tuple[Include, ...],
    reverse: tuple[Include, ...],
    forward_frontier: str = _FORWARD_FRONTIER,
    reverse_frontier: str = _REVERSE_FRONTIER,
) -> str:
    """The rids one level of the walk reaches, as SQL text, the same for the same includes;
    from the frontier `f(rid)` of `_include`s and `g(resource_type, id)` of `_revinclude`s."""
    found: list[str] = []
    if forward:
        found.append(
            f"SELECT target.rid FROM {forward_frontier} "
            "JOIN idx_reference x ON x.rid = f.rid "
            "JOIN resource target ON target.resource_type = x.target_type "
            "AND target.id = x.target_id "
            f"WHERE {_matches('x', forward)}"
        )
    if reverse:
        found.append(
            f"SELECT y.rid FROM {reverse_frontier} "
            "JOIN idx_reference y ON y.target_type = g.resource_type AND y.target_id = g.id "
            f"WHERE {_matches('y', reverse)}"
        )
    return " UNION ".join(found)


def _brought(found: str, visible: str | None, unseen: str, limit: str) -> str:
    """The resources a level brings: (resource_type, id, content text, rid) of the rids
    `found`, live, not `unseen`, the first `limit` by rid. The one place where included
    resource rows (alias `r`) are selected: what the principal may read (`visible`) is
    ANDed to this WHERE, as a condition on `r` (store/access.py)."""
    return (
        "SELECT r.resource_type, r.id, r.content::text AS content, r.rid FROM resource r "
        f"WHERE r.rid IN ({found}) AND NOT r.deleted "
        f"{'' if visible is None else f'AND {visible} '}AND {unseen} "
        f"ORDER BY r.rid LIMIT {limit}"
    )


def _level_sql(
    forward: tuple[Include, ...], reverse: tuple[Include, ...], principal: Principal | None
) -> tuple[str, list[object]]:
    """One level of the walk as SQL text, the same for the same includes and the same shape
    of principal (so asyncpg prepares it once per connection), and the values of the access
    predicate, bound after the walk's own."""
    own = 5 if reverse else 3
    sql = SearchSql(principal, reserved=own)
    visible = sql.visible("r", "r")
    # $1 appears in the text even without `_include`s: every placeholder needs a type.
    unseen = f"r.rid <> ALL({_SEEN})"
    if not forward:
        unseen = f"cardinality({_RIDS}) > 0 AND {unseen}"
    text = _brought(_walk_sql(forward, reverse), visible, unseen, "$3")
    return text, sql.args[own:]


def with_first_level(
    page: Statement,
    width: int,
    counted: bool,
    count: int,
    include: Sequence[Include],
    revinclude: Sequence[Include],
    *,
    max_total: int,
    principal: Principal | None,
) -> Statement:
    """The page statement of a search (store/search_sql.py `page_statement`: `width` sort
    values, the last of them the rid, then type, id and content, then the bounded count if
    `counted`) with the first level of its includes in the same statement: one round trip,
    where a level of its own cost a page of 50 about 0.1 ms of the server's CPU and 0.2 ms
    of PostgreSQL's more (in process, `bench/search_ab.py`).

    The page's rows come first, each numbered (the last column) in the page's order; then
    at most `max_total + 1` included rows, with that column NULL, laid out as the page's
    rows (sort values NULL but the rid). Only the first `count` rows of the page are matches
    (a page holds one more, to know whether there is a next one): only they bring
    resources, and none of them is brought."""
    columns = width + 3 + counted
    names = [f"c{n}" for n in range(columns)]
    rid, type_, id_ = names[width - 1], names[width], names[width + 1]
    matched = f"page p WHERE p.n <= {int(count)}"
    found = _walk_sql(
        tuple(include),
        tuple(revinclude),
        f"(SELECT p.{rid} AS rid FROM {matched}) AS f",
        f"(SELECT p.{type_} AS resource_type, p.{id_} AS id FROM {matched}) AS g",
    )
    own = len(page.args)
    sql = SearchSql(principal, reserved=own)
    visible = sql.visible("r", "r")
    unseen = f"r.rid NOT IN (SELECT p.{rid} FROM {matched})"
    brought = _brought(found, visible, unseen, str(int(max_total) + 1))
    laid_out = ["NULL"] * (width - 1) + ["b.rid", "b.resource_type", "b.id", "b.content"]
    laid_out += ["NULL"] * (counted + 1)
    text = (
        f"WITH page({', '.join(names)}, n) AS MATERIALIZED "
        f"(SELECT q.*, row_number() OVER () FROM ({page.sql}) q) "
        f"SELECT * FROM page UNION ALL SELECT {', '.join(laid_out)} FROM ({brought}) b"
    )
    return Statement(text, (*page.args, *sql.args[own:]))


def _joined(rids: Iterable[int]) -> str:
    return ",".join(map(str, rids))


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
    """`walk_included` inside the SQLAlchemy connection `conn` (and its transaction)."""
    if not matches or not (include or revinclude):
        return Included()
    return await walk_included(
        await driver_connection(conn),
        matches,
        include,
        revinclude,
        max_depth=max_depth,
        max_total=max_total,
        principal=principal,
    )


async def walk_included(
    driver: Any,
    matches: Sequence[Key],
    include: Sequence[Include],
    revinclude: Sequence[Include],
    *,
    max_depth: int,
    max_total: int,
    principal: Principal | None,
    first_level: Sequence[Sequence[Any]] | None = None,
) -> Included:
    """The resources `include` and `revinclude` bring for the matches (rid, type and id of
    each), none of them a match and none twice, at most `max_total` of them, followed at
    most `max_depth` levels deep, read on the asyncpg connection `driver`. `first_level`:
    the rows (type, id, content, rid) of the first level when they were read already
    (`with_first_level`), at most `max_total + 1` of them."""
    out = Included()
    seen: dict[int, None] = {}
    frontier: list[Key] = []
    for key in matches:
        if key[0] not in seen:
            seen[key[0]] = None
            frontier.append(key)
    for depth in range(max_depth):
        forward = tuple(i for i in include if depth == 0 or i.iterate)
        reverse = tuple(i for i in revinclude if depth == 0 or i.iterate)
        if not frontier or not (forward or reverse):
            return out
        room = max_total - len(out.resources)
        if depth == 0 and first_level is not None:
            rows = first_level
        else:
            text, access = _level_sql(forward, reverse, principal)
            own: list[object] = [_joined(k[0] for k in frontier), _joined(seen), room + 1]
            if reverse:
                own += [",".join(k[1] for k in frontier), ",".join(k[2] for k in frontier)]
            rows = await driver.fetch(text, *own, *access)
        if len(rows) > room:
            rows = rows[:room]
            out.capped = True
        frontier = [(row[3], row[0], row[1]) for row in rows]
        seen.update((row[3], None) for row in rows)
        out.resources.extend((row[0], row[1], row[2]) for row in rows)
        if out.capped:
            return out
    out.deep = bool(frontier) and any(i.iterate for i in (*include, *revinclude))
    return out
