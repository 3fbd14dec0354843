"""Probes for load balancers and orchestrators, outside `/fhir` and never authenticated:
`GET /healthz` (the process answers) and `GET /readyz` (the database is reachable and its
schema is at this release's migration; 503 otherwise)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cmfhir.store.readiness import Readiness

__all__ = ["health_router"]

health_router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


@health_router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


@health_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    readiness: Readiness | None = getattr(request.app.state, "readiness", None)
    problem = "starting" if readiness is None else await readiness.problem()
    if problem is None:
        return JSONResponse({"status": "ready"}, headers=_NO_STORE)
    return JSONResponse(
        {"status": "unavailable", "reason": problem},
        status_code=503,
        headers={**_NO_STORE, "Retry-After": "5"},
    )
