"""An export holds at most one page of a type's rows, whatever the type's size: the store
hands them over page by page from a server-side cursor on the export's snapshot."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import text

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.exchange.export.job import PAGE_ROWS
from cmfhir.store.exchange import resource_pages


def _create_groups(client: httpx.Client, tag: str, count: int) -> None:
    for n in range(count):
        group = {"resourceType": "Group", "type": "person", "actual": True, "name": f"{tag}-{n}"}
        assert client.post("Group", json=group).status_code == 201


async def _pages(settings: Settings, batch: int) -> tuple[list[int], int, int]:
    async with open_context(settings) as ctx, ctx.store.snapshot(TRUSTED) as repo:
        sizes: list[int] = []
        ids: set[str] = set()
        async for page in resource_pages(repo, "Group", batch=batch):
            sizes.append(len(page))
            ids.update(id for id, _, _ in page)
        stored = await repo.conn.execute(
            text("SELECT count(*) FROM resource WHERE resource_type = 'Group' AND NOT deleted")
        )
        return sizes, len(ids), int(stored.scalar_one())


def test_a_type_is_read_a_page_at_a_time(settings: Settings, client: httpx.Client) -> None:
    _create_groups(client, uuid.uuid4().hex[:8], 23)
    sizes, distinct, stored = asyncio.run(_pages(settings, 7))
    assert stored >= 23
    assert max(sizes) == 7  # never more rows held than a page
    assert sum(sizes) == distinct == stored  # and every row once
    assert PAGE_ROWS <= 5000
