"""Searches (https://hl7.org/fhir/R4B/search.html) on a raw asyncpg connection of the read
pool (store/reader.py), outside any transaction: a page (with the first level of its
includes), its count and each further level of its includes are one statement each,
prepared once per connection and shape, only their values bound. Through a SQLAlchemy
connection the checkout, isolation level and reset on return cost a quarter of a search's
CPU, for statements that need none of it.

Each statement sees what was committed when it started (READ COMMITTED), as the searches
made through the store's read-only SQLAlchemy connections did: a page and its includes are
not one snapshot, but for the first level of includes, which `search_including` reads in
the page's own statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

from cmfhir.auth.principal import Principal
from cmfhir.search.model import Include, SearchRequest
from cmfhir.store.includes import Included, Key, walk_included, with_first_level
from cmfhir.store.search_sql import SearchPage, Statement, run_search

__all__ = ["Searcher", "Searches"]


class Searches(Protocol):
    """What a search needs of the store: a `Searcher`, or a `Repository` when the search
    is one of a transaction's reads and must see its writes."""

    async def search(self, request: SearchRequest, *, count_up_to: int | None) -> SearchPage:
        """One page of matches and the total (store/search_sql.py `run_search`)."""

    async def included(
        self,
        matches: Sequence[Key],
        include: Sequence[Include],
        revinclude: Sequence[Include],
        *,
        max_depth: int,
        max_total: int,
    ) -> Included:
        """The resources `_include` and `_revinclude` add to a page of matches."""


class Searcher:
    """The search statements of one request, for `principal`, on the asyncpg connection
    `driver`: what the principal may see is ANDed in the SQL (store/access_sql.py)."""

    __slots__ = ("driver", "principal")

    def __init__(self, driver: Any, principal: Principal | None) -> None:
        self.driver = driver
        self.principal = principal

    async def search(self, request: SearchRequest, *, count_up_to: int | None) -> SearchPage:
        return await run_search(
            self.driver, request, count_up_to=count_up_to, principal=self.principal
        )

    async def search_including(
        self, request: SearchRequest, *, count_up_to: int | None, max_depth: int, max_total: int
    ) -> tuple[SearchPage, Included]:
        """`search`, then `included` for the page's matches and the request's `_include`s
        and `_revinclude`s, their first level read in the page's own statement
        (store/includes.py `with_first_level`): one round trip fewer."""
        first_level: list[Any] | None = None

        async def fetch_page(page: Statement, width: int, counted: bool) -> list[Any]:
            nonlocal first_level
            folded = with_first_level(
                page,
                width,
                counted,
                request.count,
                request.include,
                request.revinclude,
                max_total=max_total,
                principal=self.principal,
            )
            rows = await self.driver.fetch(folded.sql, *folded.args)
            matched = [row for row in rows if row[-1] is not None]
            matched.sort(key=itemgetter(-1))  # in the page's order (already, as a rule)
            brought = [
                (row[width], row[width + 1], row[width + 2], row[width - 1])
                for row in rows
                if row[-1] is None
            ]
            brought.sort(key=itemgetter(3))  # by rid, as a level of its own gives them
            first_level = brought
            return matched

        wanted = bool(request.include or request.revinclude)
        page = await run_search(
            self.driver,
            request,
            count_up_to=count_up_to,
            principal=self.principal,
            fetch_page=fetch_page if wanted and max_depth > 0 else None,
        )
        if not page.matches or not wanted:
            return page, Included()
        keys = [(rid, t, i) for rid, (t, i, _) in zip(page.rids, page.matches, strict=True)]
        found = await walk_included(
            self.driver,
            keys,
            request.include,
            request.revinclude,
            max_depth=max_depth,
            max_total=max_total,
            principal=self.principal,
            first_level=first_level,
        )
        return page, found

    async def included(
        self,
        matches: Sequence[Key],
        include: Sequence[Include],
        revinclude: Sequence[Include],
        *,
        max_depth: int,
        max_total: int,
    ) -> Included:
        return await walk_included(
            self.driver,
            matches,
            include,
            revinclude,
            max_depth=max_depth,
            max_total=max_total,
            principal=self.principal,
        )
