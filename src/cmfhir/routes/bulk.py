"""The exchange operations that need the request's base URL or headers: `$everything`
(absolute next links) and Bulk Data `$export` with its status and file URLs
(docs/exchange.md). Included before the generic operation routes."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cmfhir.exchange.everything import bound_to
from cmfhir.interactions.operations import invoke
from cmfhir.routes.fhir import Ctx, _operation_body, _query
from cmfhir.routes.http import base_url, render

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
