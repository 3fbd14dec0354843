"""search at type and system level (https://hl7.org/fhir/R4B/http.html#search,
https://hl7.org/fhir/R4B/search.html). Pages are keyset cursors, so `next` stays correct
while data changes. `_include`/`_revinclude` add resources after each page's matches
without changing paging or `total`; `_summary` and `_elements` trim what is returned."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from cmfhir.errors import BadRequest, Issue, NotFound, PayloadTooLarge
from cmfhir.interactions.audit_store import AUDIT_EVENT, refuse_links, search_page
from cmfhir.interactions.bundles import search_bundle
from cmfhir.interactions.common import check_id, require_type
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.summary import (
    SUMMARY_MODES,
    check_elements,
    element_names,
    select_elements,
    summarize,
)
from cmfhir.search.model import Compartment, SearchRequest
from cmfhir.search.parse import parse_search
from cmfhir.store import Searcher, Searches, SearchPage
from cmfhir.store.includes import Included

__all__ = ["search", "search_compartment", "search_in"]


def _check_result_params(request: SearchRequest) -> None:
    if request.summary == "text" and (request.include or request.revinclude):
        raise BadRequest(
            "_include and _revinclude cannot be combined with _summary=text",
            expression=["_summary"],
        )
    if request.elements and request.summary in SUMMARY_MODES:
        raise BadRequest(
            f"_elements cannot be combined with _summary={request.summary}",
            expression=["_elements"],
        )
    check_elements(request.resource_type, request.elements)


def _subset(
    request: SearchRequest, resources: list[tuple[str, str, str]], *, matched: bool
) -> list[tuple[str, str, str | dict[str, Any]]]:
    """`_summary` and `_elements` applied: only then is the stored JSON parsed."""
    if not request.elements and request.summary not in SUMMARY_MODES:
        return list(resources)  # whole, as stored
    out: list[tuple[str, str, str | dict[str, Any]]] = []
    for resource_type, id, content in resources:
        if request.summary in SUMMARY_MODES:
            out.append((resource_type, id, summarize(parse_json(content), request.summary)))
            continue
        keys = element_names(resource_type, request.elements, matched=matched)
        if keys is None:
            out.append((resource_type, id, content))
        else:
            out.append((resource_type, id, select_elements(parse_json(content), keys)))
    return out


async def _included(
    ctx: FhirContext, repo: Searches, request: SearchRequest, page: SearchPage
) -> Included:
    if not page.matches or not (request.include or request.revinclude):
        return Included()
    return await repo.included(
        [(rid, t, i) for rid, (t, i, _) in zip(page.rids, page.matches, strict=True)],
        request.include,
        request.revinclude,
        max_depth=ctx.limits.max_include_depth,
        max_total=ctx.limits.max_included,
    )


async def _page_and_included(
    ctx: FhirContext, repo: Searches, request: SearchRequest, count_up_to: int | None
) -> tuple[SearchPage, list[tuple[str, str, str]]]:
    """The page and the resources its `_include`s and `_revinclude`s bring, with a warning
    for each limit the walk reached. On the read pool, the first level of includes comes in
    the page's own statement."""
    includes = request.include or request.revinclude
    if isinstance(repo, Searcher) and includes and request.resource_type != AUDIT_EVENT:
        refuse_links(request)  # AuditEvents are searched in their own table
        page, found = await repo.search_including(
            request,
            count_up_to=count_up_to,
            max_depth=ctx.limits.max_include_depth,
            max_total=ctx.limits.max_included,
        )
    else:
        page = await search_page(repo, request, count_up_to=count_up_to)
        found = await _included(ctx, repo, request, page)
    if found.capped:
        request.warnings.append(
            Issue(
                f"Only the first {ctx.limits.max_included} included resources are returned",
                code="too-costly",
                severity="warning",
                expression=("_include",),
            )
        )
    if found.deep:
        request.warnings.append(
            Issue(
                f"_include:iterate and _revinclude:iterate were followed "
                f"{ctx.limits.max_include_depth} levels deep and no further",
                code="too-costly",
                severity="warning",
                expression=("_include",),
            )
        )
    return page, found.resources


def _check_size(
    ctx: FhirContext,
    matches: list[tuple[str, str, str]],
    included: list[tuple[str, str, str]],
) -> None:
    """One page holds at most `max_response_bytes` of resources (docs/configuration.md,
    Limits): past it the search is refused as too costly rather than answered, and the
    client asks again with a smaller `_count` (or fewer `_include`s)."""
    size = sum(len(content) for _, _, content in matches)
    size += sum(len(content) for _, _, content in included)
    limit = ctx.limits.max_response_bytes
    if size > limit:
        raise PayloadTooLarge(
            f"This page would hold {len(matches) + len(included)} resources of {size} "
            f"characters; one response holds at most {limit}. Ask for a smaller page "
            "(_count) or fewer included resources"
        )


def _with_cursor(url: str, echo: str, cursor: str | None) -> str:
    """`url` with the encoded parameters `echo` and then `_cursor`, if any."""
    query = echo
    if cursor is not None:
        query = (
            f"{echo}&{urlencode([('_cursor', cursor)])}"
            if echo
            else urlencode([("_cursor", cursor)])
        )
    return f"{url}?{query}" if query else url


async def search_in(
    ctx: FhirContext,
    repo: Searches,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    base: str,
    handling: str | None = None,
    compartment: Compartment | None = None,
) -> Result:
    """`handling` is the `Prefer: handling=` of the request: unknown parameters are refused
    unless it is `lenient` (https://hl7.org/fhir/R4B/search.html#errors)."""
    if resource_type is not None:
        require_type(resource_type, ctx.fhir_version)
    request = parse_search(
        ctx.registry,
        resource_type,
        params,
        default_count=ctx.limits.default_count,
        max_count=ctx.limits.max_count,
        strict=handling != "lenient",
    )
    _check_result_params(request)
    request.compartment = compartment
    if request.summary == "count":
        request.count = 0
    # Counting every match is a second pass over them. Asked for, it is done in full; by
    # default a first page counts up to a bound and gives the total when it is below it,
    # if that count reads one criterion's index rows alone (store/search_sql.py
    # `run_search`): a count that probes each candidate is not made unless asked for.
    if request.count == 0 or request.total in ("accurate", "estimate"):
        count_up_to: int | None = None
    elif request.total is None and request.cursor is None:
        count_up_to = ctx.limits.default_total_bound
    else:
        count_up_to = 0
    page, included = await _page_and_included(ctx, repo, request, count_up_to)
    _check_size(ctx, page.matches, included)
    path = resource_type or ""
    if compartment is not None:
        path = f"{compartment.owner_type}/{compartment.owner_id}/{path}"
    # The parameters are encoded once for both links (as `link` would encode them).
    echo = urlencode(request.echo)
    url = f"{base}/{path}" if path else base
    links = {"self": _with_cursor(url, echo, request.cursor)}
    if page.next_cursor is not None:
        links["next"] = _with_cursor(url, echo, page.next_cursor)
    body = search_bundle(
        base,
        _subset(request, page.matches, matched=True),
        included=_subset(request, included, matched=False),
        total=page.total,
        links=links,
        warnings=request.warnings,
    )
    return Result(200, body)


async def search(
    ctx: FhirContext,
    resource_type: str | None,
    params: list[tuple[str, str]],
    *,
    base: str,
    handling: str | None = None,
) -> Result:
    async with ctx.store.searching(ctx.principal) as repo:
        return await search_in(ctx, repo, resource_type, params, base=base, handling=handling)


async def search_compartment(
    ctx: FhirContext,
    owner_id: str,
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    base: str,
    handling: str | None = None,
) -> Result:
    """`GET Patient/{id}/{type}`: a search inside the member's compartment."""
    require_type(resource_type, ctx.fhir_version)
    check_id(owner_id)
    params_for = ctx.compartment.params_for(resource_type)
    if not params_for and resource_type != "Patient":
        raise NotFound(f"{resource_type} is not in the Patient compartment")
    compartment = Compartment("Patient", owner_id, params_for)
    async with ctx.store.searching(ctx.principal) as repo:
        return await search_in(
            ctx, repo, resource_type, params, base=base, handling=handling, compartment=compartment
        )
