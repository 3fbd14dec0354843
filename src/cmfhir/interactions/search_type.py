"""search at type and system level (https://hl7.org/fhir/R4B/http.html#search,
https://hl7.org/fhir/R4B/search.html). Pages are keyset cursors, so `next` stays correct
while data changes."""

from __future__ import annotations

from cmfhir.errors import BadRequest, NotFound
from cmfhir.interactions.bundles import link, search_bundle
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.search.model import Compartment
from cmfhir.search.parse import parse_search
from cmfhir.store import Repository

__all__ = ["search", "search_compartment", "search_in"]


async def search_in(
    ctx: FhirContext,
    repo: Repository,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    base: str,
    strict: bool = False,
    compartment: Compartment | None = None,
) -> Result:
    if resource_type is not None:
        require_type(resource_type)
    request = parse_search(
        ctx.registry,
        resource_type,
        params,
        default_count=ctx.limits.default_count,
        max_count=ctx.limits.max_count,
        strict=strict,
    )
    if request.summary in ("true", "text", "data") or request.elements:
        raise BadRequest(
            "_summary=true|text|data and _elements are not supported yet",
            code="not-supported",
            expression=["_summary" if request.summary else "_elements"],
        )
    request.compartment = compartment
    if request.summary == "count":
        request.count = 0
    with_total = (
        request.count == 0
        or request.total in ("accurate", "estimate")
        or (request.total is None and request.cursor is None)
    )
    page = await repo.search(request, with_total=with_total)
    path = resource_type or ""
    if compartment is not None:
        path = f"{compartment.owner_type}/{compartment.owner_id}/{path}"
    self_params = list(request.echo)
    if request.cursor is not None:
        self_params.append(("_cursor", request.cursor))
    links = {"self": link(base, path, self_params)}
    if page.next_cursor is not None:
        links["next"] = link(base, path, [*request.echo, ("_cursor", page.next_cursor)])
    body = search_bundle(
        base, page.matches, total=page.total, links=links, warnings=request.warnings
    )
    return Result(200, body)


async def search(
    ctx: FhirContext,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    base: str,
    strict: bool = False,
) -> Result:
    async with ctx.store.transaction(read_only=True) as repo:
        return await search_in(ctx, repo, resource_type, params, base=base, strict=strict)


async def search_compartment(
    ctx: FhirContext,
    owner_id: str,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base: str,
    strict: bool = False,
) -> Result:
    """`GET Patient/{id}/{type}`: a search inside the member's compartment."""
    require_type(resource_type)
    check_id(owner_id)
    params_for = ctx.compartment.params_for(resource_type)
    if not params_for and resource_type != "Patient":
        raise NotFound(f"{resource_type} is not in the Patient compartment")
    compartment = Compartment("Patient", owner_id, params_for)
    async with ctx.store.transaction(read_only=True) as repo:
        return await search_in(
            ctx, repo, resource_type, params, base=base, strict=strict, compartment=compartment
        )
