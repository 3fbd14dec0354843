"""Searches (https://hl7.org/fhir/R4B/search.html) on a raw asyncpg connection of the read
pool (store/reader.py), outside any transaction: a page, its count and each level of its
includes are one statement each, prepared once per connection and shape, only their values
bound. Through a SQLAlchemy connection the checkout, isolation level and reset on return
cost a quarter of a search's CPU, for statements that need none of it.

Each statement sees what was committed when it started (READ COMMITTED), as the searches
made through the store's read-only SQLAlchemy connections did: a page and its includes are
not one snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cmfhir.auth.principal import Principal
from cmfhir.search.model import Include, SearchRequest
from cmfhir.store.includes import Included, Key, walk_included
from cmfhir.store.search_sql import SearchPage, run_search

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
