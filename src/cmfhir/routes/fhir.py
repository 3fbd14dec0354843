"""The FHIR RESTful API under `/fhir` (https://hl7.org/fhir/R4B/http.html): each endpoint
parses the request, calls one interaction, and renders its result."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cmfhir.errors import UnsupportedMediaType
from cmfhir.interactions import (
    capabilities,
    create,
    delete,
    delete_conditional,
    history,
    patch,
    process_bundle,
    read,
    search,
    search_compartment,
    update,
    update_conditional,
    vread,
)
from cmfhir.interactions.context import FhirContext
from cmfhir.routes.http import base_url, media_type, prefer, read_body, read_json, render
from cmfhir.search import selection_query

__all__ = ["router"]

router = APIRouter(prefix="/fhir")


async def get_context(request: Request) -> FhirContext:
    context: FhirContext = request.app.state.fhir
    return context


Ctx = Annotated[FhirContext, Depends(get_context)]


def _query(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


def _handling(request: Request) -> str | None:
    return prefer(request).get("handling")


async def _form_params(request: Request) -> list[tuple[str, str]]:
    kind = media_type(request)
    if kind not in (None, "application/x-www-form-urlencoded"):
        raise UnsupportedMediaType("_search takes application/x-www-form-urlencoded parameters")
    body = (await read_body(request)).decode("utf-8", errors="replace")
    return _query(request) + parse_qsl(body, keep_blank_values=True)


@router.get("/metadata")
async def metadata(request: Request, ctx: Ctx) -> Response:
    return render(await capabilities(ctx, base=base_url(request)), request)


@router.post("")
@router.post("/")
async def bundle(request: Request, ctx: Ctx) -> Response:
    body = await read_json(request)
    representation = prefer(request).get("return") != "minimal"
    result = await process_bundle(ctx, body, base=base_url(request), representation=representation)
    return render(result, request)


@router.get("")
@router.get("/")
async def search_system(request: Request, ctx: Ctx) -> Response:
    result = await search(
        ctx, None, _query(request), base=base_url(request), handling=_handling(request)
    )
    return render(result, request)


@router.post("/_search")
async def search_system_post(request: Request, ctx: Ctx) -> Response:
    params = await _form_params(request)
    result = await search(ctx, None, params, base=base_url(request), handling=_handling(request))
    return render(result, request)


@router.get("/_history")
async def history_system(request: Request, ctx: Ctx) -> Response:
    return render(await history(ctx, None, None, _query(request), base=base_url(request)), request)


@router.get("/{resource_type}")
async def search_type(resource_type: str, request: Request, ctx: Ctx) -> Response:
    result = await search(
        ctx, resource_type, _query(request), base=base_url(request), handling=_handling(request)
    )
    return render(result, request)


@router.post("/{resource_type}/_search")
async def search_type_post(resource_type: str, request: Request, ctx: Ctx) -> Response:
    params = await _form_params(request)
    result = await search(
        ctx, resource_type, params, base=base_url(request), handling=_handling(request)
    )
    return render(result, request)


@router.get("/{resource_type}/_history")
async def history_type(resource_type: str, request: Request, ctx: Ctx) -> Response:
    result = await history(ctx, resource_type, None, _query(request), base=base_url(request))
    return render(result, request)


@router.post("/{resource_type}")
async def create_type(resource_type: str, request: Request, ctx: Ctx) -> Response:
    body = await read_json(request)
    # Criteria in the query string of a create (as some clients send them) mean the same as
    # If-None-Exist: never create a silent duplicate of what the client asked to match.
    condition = request.headers.get("if-none-exist") or selection_query(request.url.query)
    result = await create(ctx, resource_type, body, if_none_exist=condition)
    return render(result, request, write=True)


@router.put("/{resource_type}")
async def update_type_conditional(resource_type: str, request: Request, ctx: Ctx) -> Response:
    body = await read_json(request)
    result = await update_conditional(
        ctx,
        resource_type,
        request.url.query,
        body,
        if_match=request.headers.get("if-match"),
    )
    return render(result, request, write=True)


@router.delete("/{resource_type}")
async def delete_type_conditional(resource_type: str, request: Request, ctx: Ctx) -> Response:
    return render(await delete_conditional(ctx, resource_type, request.url.query), request)


@router.get("/{resource_type}/{id}")
async def read_instance(resource_type: str, id: str, request: Request, ctx: Ctx) -> Response:
    return render(await read(ctx, resource_type, id, _query(request)), request)


@router.put("/{resource_type}/{id}")
async def update_instance(resource_type: str, id: str, request: Request, ctx: Ctx) -> Response:
    body = await read_json(request)
    result = await update(ctx, resource_type, id, body, if_match=request.headers.get("if-match"))
    return render(result, request, write=True)


@router.patch("/{resource_type}/{id}")
async def patch_instance(resource_type: str, id: str, request: Request, ctx: Ctx) -> Response:
    operations = await read_json(request, patch=True)
    result = await patch(
        ctx, resource_type, id, operations, if_match=request.headers.get("if-match")
    )
    return render(result, request, write=True)


@router.delete("/{resource_type}/{id}")
async def delete_instance(resource_type: str, id: str, request: Request, ctx: Ctx) -> Response:
    result = await delete(ctx, resource_type, id, if_match=request.headers.get("if-match"))
    return render(result, request)


@router.get("/{resource_type}/{id}/_history")
async def history_instance(resource_type: str, id: str, request: Request, ctx: Ctx) -> Response:
    result = await history(ctx, resource_type, id, _query(request), base=base_url(request))
    return render(result, request)


@router.get("/Patient/{id}/{resource_type}")
async def search_patient_compartment(
    id: str, resource_type: str, request: Request, ctx: Ctx
) -> Response:
    result = await search_compartment(
        ctx, id, resource_type, _query(request), base=base_url(request), handling=_handling(request)
    )
    return render(result, request)


@router.get("/{resource_type}/{id}/_history/{version_id}")
async def vread_instance(
    resource_type: str, id: str, version_id: str, request: Request, ctx: Ctx
) -> Response:
    return render(await vread(ctx, resource_type, id, version_id, _query(request)), request)
