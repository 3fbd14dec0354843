"""`Measure/$care-gaps` with the request's base URL bound, so each entry of the Gaps In
Care documents has the resource's own URL as its fullUrl (gaps/care_gaps.py). Included
before the generic operation routes."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cmfhir.interactions.operations import invoke
from cmfhir.routes.fhir import Ctx, _operation_body, _query
from cmfhir.routes.http import base_url, render

__all__ = ["care_gaps_router"]

care_gaps_router = APIRouter(prefix="/fhir")


@care_gaps_router.get("/Measure/$care-gaps")
@care_gaps_router.post("/Measure/$care-gaps")
async def care_gaps(request: Request, ctx: Ctx) -> Response:
    # gaps.care_gaps.runner's implementation, which takes the base as a keyword.
    implementation: Any = ctx.implementations.get("care-gaps")
    if implementation is not None:
        bound = functools.partial(implementation, base=base_url(request))
        ctx = replace(ctx, implementations={**ctx.implementations, "care-gaps": bound})
    result = await invoke(
        ctx,
        "care-gaps",
        resource_type="Measure",
        id=None,
        method=request.method,
        query=_query(request),
        body=await _operation_body(request),
        plain_json=bool(request.scope.get("state", {}).get("plain_json")),
    )
    return render(result, request)
