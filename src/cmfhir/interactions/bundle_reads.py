"""The reads a transaction or batch entry may make (GET, HEAD, or a search by POST), inside
the Bundle's database transaction so that a transaction's reads see its own writes."""

from __future__ import annotations

from urllib.parse import parse_qsl

from cmfhir.errors import BadRequest, NotFound
from cmfhir.interactions.budget import within_budget
from cmfhir.interactions.capabilities import capabilities
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.entries import Entry
from cmfhir.interactions.history import history
from cmfhir.interactions.read import read_in, vread_in
from cmfhir.interactions.search_type import search_in
from cmfhir.search.model import Compartment
from cmfhir.store import Repository

__all__ = ["HISTORY", "history_entry", "read_entry"]

HISTORY = frozenset({"history-system", "history-type", "history-instance"})


async def history_entry(ctx: FhirContext, entry: Entry, base: str) -> Result:
    """A batch's history read (it opens its own read-only connection)."""
    params = parse_qsl(entry.query or "", keep_blank_values=True)
    return await within_budget(
        ctx,
        lambda narrowed: history(
            narrowed, entry.resource_type or None, entry.id, params, base=base
        ),
    )


async def read_entry(ctx: FhirContext, repo: Repository, entry: Entry, base: str) -> Result:
    # What all GET entries of one Bundle may return is capped (interactions.budget).
    return await within_budget(ctx, lambda narrowed: _read(narrowed, repo, entry, base))


async def _read(ctx: FhirContext, repo: Repository, entry: Entry, base: str) -> Result:
    params = parse_qsl(entry.query or "", keep_blank_values=True)
    kind = entry.interaction
    if kind == "read":
        return await read_in(repo, entry.resource_type, entry.id or "", params)
    if kind == "vread":
        return await vread_in(
            repo, entry.resource_type, entry.id or "", entry.target.version or "", params
        )
    if kind in ("search-system", "search-type"):
        return await search_in(ctx, repo, entry.resource_type or None, params, base=base)
    if kind == "search-compartment":
        require_type(entry.resource_type, ctx.fhir_version)
        check_id(entry.id or "")
        params_for = ctx.compartment.params_for(entry.resource_type)
        if not params_for and entry.resource_type != "Patient":
            raise NotFound(f"{entry.resource_type} is not in the Patient compartment")
        compartment = Compartment("Patient", entry.id or "", params_for)
        return await search_in(
            ctx, repo, entry.resource_type, params, base=base, compartment=compartment
        )
    if kind == "capabilities":
        return await capabilities(ctx, base=base)
    # History reads committed versions on a connection of their own, so inside a transaction
    # it would not see the transaction's own writes.
    raise BadRequest(f"{entry.method} {kind} is not supported inside a transaction")
