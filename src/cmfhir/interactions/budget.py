"""What one batch or transaction may return: each GET entry is a search or read whose
answer the response Bundle holds, so 200 searches of 1000 resources would hold 200,000.

The GET entries of one Bundle share a budget of `max_response_entries` resources and
`max_response_bytes` bytes. A search entry's page size is lowered to what is left (the
spec lets a server return fewer than `_count`; the page's `next` link reaches the rest),
and an entry that finds the budget spent is answered 413 `too-costly` — in a batch that
entry alone, in a transaction the whole Bundle, as for any failed entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from cmfhir.errors import PayloadTooLarge
from cmfhir.interactions.context import FhirContext, Limits, Result
from cmfhir.resources.fhirjson import dump_json

__all__ = ["ResponseBudget", "response_budget", "within_budget"]


@dataclass(slots=True)
class ResponseBudget:
    max_entries: int
    max_bytes: int
    entries: int = 0
    bytes: int = 0

    def _spent(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The Bundle's earlier GET entries returned {self.entries} resources "
            f"({self.bytes} bytes); one response holds at most {self.max_entries} resources "
            f"and {self.max_bytes} bytes. Send the remaining searches in another request, or "
            "ask for smaller pages (_count)"
        )

    def narrow(self, ctx: FhirContext) -> FhirContext:
        """`ctx` with page sizes no larger than what is left of the budget."""
        left = self.max_entries - self.entries
        if left <= 0 or self.bytes >= self.max_bytes:
            raise self._spent()
        limits = ctx.limits
        if limits.max_count <= left and limits.max_included <= left:
            return ctx
        narrowed = dataclasses.replace(
            limits,
            max_count=min(limits.max_count, left),
            default_count=min(limits.default_count, left),
            max_included=min(limits.max_included, left),
        )
        return dataclasses.replace(ctx, limits=narrowed)

    def charge(self, result: Result) -> None:
        """Count what an entry returned; past the budget, refuse it instead."""
        body = result.body
        if body is None:
            return
        size = len(body) if isinstance(body, str) else len(dump_json(body))
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            found = len(body.get("entry", ()))
        else:
            found = 1
        if self.entries + found > self.max_entries or self.bytes + size > self.max_bytes:
            raise self._spent()
        self.entries += found
        self.bytes += size


_current: ContextVar[ResponseBudget | None] = ContextVar("response_budget", default=None)


@contextlib.contextmanager
def response_budget(limits: Limits) -> Iterator[ResponseBudget]:
    """The budget the GET entries of one Bundle share, for as long as the block runs."""
    budget = ResponseBudget(limits.max_response_entries, limits.max_response_bytes)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


async def within_budget(
    ctx: FhirContext, read: Callable[[FhirContext], Awaitable[Result]]
) -> Result:
    """Run one GET entry with page sizes narrowed to the budget, and charge its answer."""
    budget = _current.get()
    if budget is None:
        return await read(ctx)
    result = await read(budget.narrow(ctx))
    budget.charge(result)
    return result
