"""Wiring: settings read once, the database opened, definitions loaded, routes mounted."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmfhir import __version__
from cmfhir.config import Settings
from cmfhir.errors import BadRequest, FhirError
from cmfhir.exchange.everything import run as everything
from cmfhir.exchange.export.kickoff import run as export
from cmfhir.exchange.import_operation import run as imports
from cmfhir.exchange.services import exchange_services
from cmfhir.interactions import FhirContext, Limits
from cmfhir.resources.compartment import load_patient_compartment
from cmfhir.resources.operations import load_operations
from cmfhir.resources.search_parameters import load_registry
from cmfhir.resources.types import RESOURCE_TYPES
from cmfhir.routes import ErrorGuard, Wire, error_response, http_error_response, router
from cmfhir.routes.access_log import AccessLog
from cmfhir.routes.bulk import bulk_router
from cmfhir.routes.cors import CORSMiddleware, cors_options, parse_origins
from cmfhir.routes.health import health_router
from cmfhir.routes.hl7v2 import hl7v2_router
from cmfhir.store import ReferencePolicy, Store, open_database
from cmfhir.store.readiness import Readiness

__all__ = ["create_app", "open_context"]

log = logging.getLogger("cmfhir")


@asynccontextmanager
async def open_context(settings: Settings) -> AsyncIterator[FhirContext]:
    """The database opened (and migrated) and the FHIR definitions loaded, for as long as
    the block runs: what the server and the `cmfhir` commands work with."""
    database = await open_database(
        settings.database_url,
        settings.data_dir,
        pool_size=settings.pool_size,
        statement_timeout_ms=settings.statement_timeout_ms,
    )
    try:
        yield FhirContext(
            store=Store(
                database.engine,
                ReferencePolicy(
                    on_write=settings.enforce_referential_integrity_on_write,
                    on_delete=settings.enforce_referential_integrity_on_delete,
                    bases=(settings.base_url,) if settings.base_url else (),
                ),
            ),
            registry=load_registry(settings.profiles_dir),
            compartment=load_patient_compartment(settings.profiles_dir),
            operations=load_operations(settings.profiles_dir),
            implementations={"everything": everything, "export": export, "import": imports},
            limits=Limits(
                default_count=settings.default_count,
                max_count=settings.max_count,
                max_bundle_entries=settings.max_bundle_entries,
                max_included=settings.max_included,
                max_include_depth=settings.max_include_depth,
                max_body_bytes=settings.max_body_bytes,
                max_response_entries=settings.max_response_entries,
                max_response_bytes=settings.max_response_bytes,
            ),
        )
    finally:
        await database.dispose()


def _settle_heap(context: FhirContext) -> None:
    """Build the lazily compiled index extractors now, then move everything made at start-up
    out of the garbage collector's sight: a full collection otherwise re-scans those
    hundreds of thousands of long-lived objects and stalls a worker for ~100 ms every few
    seconds under load, which was the p99 of reads and searches (bench/README.md)."""
    for resource_type in RESOURCE_TYPES:
        context.registry.extractors(resource_type)
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings) as context:
            app.state.fhir = context
            app.state.readiness = Readiness(context.store.engine)
            _settle_heap(context)
            async with exchange_services(context, settings.base_url):
                yield

    app = FastAPI(
        title="cmfhir",
        version=__version__,
        description="FHIR R4 (and R4B) care-management data system",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's document describes paths, not the FHIR interactions: off unless asked for.
        openapi_url="/openapi.json" if settings.openapi else None,
    )
    app.state.settings = settings
    app.include_router(bulk_router)  # before router: its operations need the base URL
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(hl7v2_router)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, error: FhirError) -> Response:
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return http_error_response(error)

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, error: RequestValidationError) -> Response:
        return error_response(BadRequest("The request is malformed"))

    # Large answers (the CapabilityStatement, search pages) compressed for clients that ask.
    app.add_middleware(GZipMiddleware, minimum_size=8192, compresslevel=5)
    app.add_middleware(ErrorGuard)
    # Request id, nosniff and the negotiated Content-Type on every response (inside CORS,
    # so that a 406 carries the CORS headers a browser needs to read it).
    app.add_middleware(Wire)
    # Outside ErrorGuard, so that a 500 carries the CORS headers a browser needs to read it.
    origins = parse_origins(settings.cors_origins)
    if origins:
        app.add_middleware(CORSMiddleware, **cors_options(origins))
    # Outermost: every request is timed and logged, preflights and 500s included.
    app.add_middleware(AccessLog)
    return app
