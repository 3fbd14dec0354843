"""Waiting on asyncio events: what the background workers do between rounds."""

from __future__ import annotations

import asyncio

__all__ = ["either"]


async def either(first: asyncio.Event, second: asyncio.Event) -> None:
    """Return as soon as one of the two events is set."""
    tasks = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
