"""The exchange operations that need the request's base URL or headers: `$everything`
(absolute next links), Bulk Data `$export` and `$import` with their status and file URLs
(docs/exchange.md). Included before the generic operation routes."""

from __future__ import annotations

import functools
from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cmfhir.exchange import import_operation
from cmfhir.exchange.everything import bound_to
from cmfhir.exchange.export.kickoff import cancel, export_file, kickoff, status
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.operations import invoke
from cmfhir.routes.fhir import Ctx, _operation_body, _query
from cmfhir.routes.http import base_url, prefer, render

__all__ = ["bulk_router"]

bulk_router = APIRouter(prefix="/fhir")


@bulk_router.get("/Patient/{id}/$everything")
@bulk_router.post("/Patient/{id}/$everything")
async def patient_everything(id: str, request: Request, ctx: Ctx) -> Response:
    bound = replace(
        ctx, implementations={**ctx.implementations, "everything": bound_to(base_url(request))}
    )
    result = await invoke(
        bound,
        "everything",
        resource_type="Patient",
        id=id,
        method=request.method,
        query=_query(request),
        body=await _operation_body(request),
    )
    return render(result, request)


async def _kickoff(
    request: Request, ctx: FhirContext, resource_type: str | None, id: str | None
) -> Response:
    base = base_url(request)
    implementation = functools.partial(
        kickoff,
        respond_async=prefer(request).get("respond-async") is not None,
        posted=request.method == "POST",
        request_url=str(request.url),
        base=base,
    )
    bound = replace(ctx, implementations={**ctx.implementations, "export": implementation})
    result = await invoke(
        bound,
        "export",
        resource_type=resource_type,
        id=id,
        method=request.method,
        query=_query(request),
        body=await _operation_body(request),
    )
    return render(result, request)


@bulk_router.get("/$export")
@bulk_router.post("/$export")
async def export_system(request: Request, ctx: Ctx) -> Response:
    return await _kickoff(request, ctx, None, None)


@bulk_router.get("/Patient/$export")
@bulk_router.post("/Patient/$export")
async def export_patients(request: Request, ctx: Ctx) -> Response:
    return await _kickoff(request, ctx, "Patient", None)


@bulk_router.get("/Group/{id}/$export")
@bulk_router.post("/Group/{id}/$export")
async def export_group(id: str, request: Request, ctx: Ctx) -> Response:
    return await _kickoff(request, ctx, "Group", id)


@bulk_router.get("/$export-status/{job_id}")
async def export_status(job_id: str, request: Request, ctx: Ctx) -> Response:
    return render(await status(ctx, job_id, base=base_url(request)), request)


@bulk_router.delete("/$export-status/{job_id}")
async def export_cancel(job_id: str, request: Request, ctx: Ctx) -> Response:
    return render(await cancel(ctx, job_id), request)


@bulk_router.get("/$export-file/{job_id}/{name}")
async def export_file_get(job_id: str, name: str, request: Request, ctx: Ctx) -> Response:
    return render(await export_file(ctx, job_id, name), request)


@bulk_router.post("/$import")
async def import_kickoff(request: Request, ctx: Ctx) -> Response:
    implementation = functools.partial(
        import_operation.kickoff,
        respond_async=prefer(request).get("respond-async") is not None,
        request_url=str(request.url),
        base=base_url(request),
    )
    bound = replace(ctx, implementations={**ctx.implementations, "import": implementation})
    result = await invoke(
        bound,
        "import",
        resource_type=None,
        id=None,
        method=request.method,
        query=_query(request),
        body=await _operation_body(request),
    )
    return render(result, request)


@bulk_router.get("/$import-status/{job_id}")
async def import_status(job_id: str, request: Request, ctx: Ctx) -> Response:
    return render(await import_operation.status(ctx, job_id, base=base_url(request)), request)


@bulk_router.delete("/$import-status/{job_id}")
async def import_cancel(job_id: str, request: Request, ctx: Ctx) -> Response:
    return render(await import_operation.cancel(ctx, job_id), request)


@bulk_router.get("/$import-file/{job_id}/{name}")
async def import_file_get(job_id: str, name: str, request: Request, ctx: Ctx) -> Response:
    return render(await import_operation.import_file(ctx, job_id, name), request)
