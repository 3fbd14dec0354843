"""batch (https://hl7.org/fhir/R4B/http.html#transaction): each entry is processed on its
own, as the same request over HTTP would be, and gets its own answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cmfhir.errors import FhirError, operation_outcome
from cmfhir.interactions.bundle_reads import HISTORY, history_entry, read_entry
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.create import create
from cmfhir.interactions.delete import delete, delete_conditional
from cmfhir.interactions.entries import Entry, at_entry, patch_operations, response_entry
from cmfhir.interactions.patch import patch
from cmfhir.interactions.update import update, update_conditional

__all__ = ["run_batch"]


async def _batch_entry(ctx: FhirContext, e: Entry, base: str) -> Result:
    if e.error is not None:
        raise e.error
    calls: dict[str, Callable[[], Awaitable[Result]]] = {
        "create": lambda: create(ctx, e.resource_type, e.resource, if_none_exist=e.if_none_exist),
        "update": lambda: update(ctx, e.resource_type, e.id or "", e.resource, if_match=e.if_match),
        "update-conditional": lambda: update_conditional(
            ctx, e.resource_type, e.query or "", e.resource, if_match=e.if_match
        ),
        "patch": lambda: patch(
            ctx, e.resource_type, e.id or "", patch_operations(e), if_match=e.if_match
        ),
        "delete": lambda: delete(ctx, e.resource_type, e.id or "", if_match=e.if_match),
        "delete-conditional": lambda: delete_conditional(ctx, e.resource_type, e.query or ""),
    }
    if e.interaction in calls:
        return await calls[e.interaction]()
    if e.interaction in HISTORY:
        return await history_entry(ctx, e, base)
    async with ctx.store.transaction(principal=ctx.principal, read_only=True) as repo:
        return await read_entry(ctx, repo, e, base)


async def run_batch(
    ctx: FhirContext, entries: list[Entry], base: str, representation: bool
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for e in entries:
        try:
            result = await _batch_entry(ctx, e, base)
            out.append(response_entry(result, representation))
        except FhirError as error:
            error = at_entry(error, e.index)
            out.append(
                {
                    "response": {
                        "status": str(error.status),
                        "outcome": operation_outcome(error.issues),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}
