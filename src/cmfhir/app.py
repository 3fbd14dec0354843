"""Wiring: settings read once, the database opened, definitions loaded, routes mounted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from cmfhir import __version__
from cmfhir.auth.keys import SigningKeys
from cmfhir.config import Settings, check_auth_binding
from cmfhir.errors import BadRequest, FhirError
from cmfhir.exchange.everything import run as everything
from cmfhir.exchange.export.kickoff import run as export
from cmfhir.exchange.import_operation import run as imports
from cmfhir.exchange.services import exchange_services
from cmfhir.gaps import care_gaps
from cmfhir.interactions import FhirContext, Limits
from cmfhir.interactions.audit import AuditTrail
from cmfhir.interactions.builtin_apps import app_origins, register_builtin_apps
from cmfhir.interactions.content import CONTENT_DIR, load_content
from cmfhir.interactions.oauth import AuthorizationServer, ResourceServer
from cmfhir.reports.config import load_report_config
from cmfhir.reports.evaluate_measure import evaluate_measure
from cmfhir.resources.compartment import load_patient_compartment
from cmfhir.resources.operations import load_operations
from cmfhir.resources.search_parameters import load_registry
from cmfhir.routes import DirectRoutes, Edge, error_response, http_error_response, router
from cmfhir.routes.apps import apps_router
from cmfhir.routes.audit import AuditMiddleware
from cmfhir.routes.bulk import bulk_router
from cmfhir.routes.care_gaps import care_gaps_router
from cmfhir.routes.compression import GZIP_LEVEL, GZIP_MINIMUM_BYTES
from cmfhir.routes.cors import cors_options, parse_origins
from cmfhir.routes.health import health_router
from cmfhir.routes.hl7v2 import hl7v2_router
from cmfhir.routes.read_path import ReadPath
from cmfhir.routes.reports import reports_router
from cmfhir.routes.smart import smart_router
from cmfhir.routes.subscriptions_ws import ws_router
from cmfhir.store import OAuthStore, ReferencePolicy, Store, open_database
from cmfhir.store.readiness import Readiness
from cmfhir.subscriptions import open_subscriptions
from cmfhir.workers import settle_heap, standard_workers, start_workers

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
        context = FhirContext(
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
            implementations={
                "evaluate-measure": evaluate_measure(load_report_config(settings.profiles_dir)),
                "care-gaps": care_gaps.runner(settings.profiles_dir),
                "everything": everything,
                "export": export,
                "import": imports,
            },
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
        yield await open_subscriptions(
            context,
            profiles_dir=settings.profiles_dir,
            key=settings.subscription_key,
            endpoints=settings.subscription_endpoints,
            allow_loopback=settings.subscription_allow_loopback,
            retry_hours=settings.subscription_retry_hours,
            base=settings.base_url,
        )
    finally:
        await database.dispose()


async def _start_auth(app: FastAPI, settings: Settings, context: FhirContext) -> None:
    """The resource server (and, without an external issuer, the built-in authorization
    server with its signing keys, made on first start) for CMFHIR_AUTH=smart."""
    store = OAuthStore(context.store.engine)
    keys = None
    if settings.auth == "smart" and settings.auth_issuer is None:
        keys = SigningKeys(settings.data_dir / "auth-keys")
        keys.ensure()
        app.state.authorization = AuthorizationServer(
            store,
            keys,
            access_lifetime=settings.access_token_lifetime_s,
            refresh_lifetime=settings.refresh_token_lifetime_s,
            login_attempts=settings.login_attempts,
            login_window=settings.login_window_s,
        )
        await _register_apps(store, settings)
        users, clients = await store.counts()
        if not users or not clients:
            log.warning(
                "authorization is on and no %s registered yet. Create them with: "
                "cmfhir user add --username U --password P --fhir-user Practitioner/ID ; "
                'cmfhir client register --client-id ID --public --redirect-uri URI --scope "..."'
                " (./dev cmfhir ... in a checkout; docs/security.md)",
                "user is" if not users else "client is",
            )
    app.state.resource_server = ResourceServer(
        store, keys, settings.auth_issuer, settings.auth_jwks_url
    )


async def _register_apps(store: OAuthStore, settings: Settings) -> None:
    origins = app_origins(settings.apps_origins, settings.base_url)
    if not origins:
        log.warning(
            "the built-in apps (/apps/...) cannot sign in: set CMFHIR_BASE_URL (or "
            "CMFHIR_APPS_ORIGINS) to the address users reach this server at (docs/apps.md)"
        )
    await register_builtin_apps(store, origins)


@asynccontextmanager
async def _audit_trail(
    app: FastAPI, settings: Settings, context: FhirContext
) -> AsyncIterator[None]:
    """The audit trail's writer, for as long as the server runs; what is still buffered
    is written when it stops."""
    if not settings.audit:
        yield
        return
    trail = AuditTrail(context, interval=settings.audit_interval_s)
    app.state.audit = trail
    stop = asyncio.Event()
    task = asyncio.create_task(trail.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await trail.flush()


class Server(FastAPI):
    """The application, with reads and vreads answered in front of its middleware stack
    (routes/read_path.py)."""

    # CORS configured: a browser's cross-origin read then takes the stack's CORS layer.
    cors = False

    def build_middleware_stack(self) -> ASGIApp:
        return ReadPath(super().build_middleware_stack(), cors=self.cors)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_context(settings) as context:
            app.state.fhir = context
            await load_content(context, settings.profiles_dir / CONTENT_DIR)
            app.state.readiness = Readiness(context.store.engine)
            await _start_auth(app, settings, context)
            settle_heap(context)
            running = (
                start_workers(standard_workers(context, settings)) if settings.workers else None
            )
            try:
                async with (
                    _audit_trail(app, settings, context),
                    exchange_services(context, settings.base_url),
                ):
                    yield
            finally:
                if running is not None:
                    await running.close()

    app = Server(
        title="cmfhir",
        version=__version__,
        description="FHIR R4 (and R4B) care-management data system",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's document describes paths, not the FHIR interactions: off unless asked for.
        openapi_url="/openapi.json" if settings.openapi else None,
        # No OpenTelemetry from FastAPI: its logs would carry exception messages (which may
        # quote member data), and asking whether it is configured cost every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.report_config = load_report_config(settings.profiles_dir)
    warning = check_auth_binding(settings, "127.0.0.1")
    if warning:
        log.warning(warning)
    # Before the FHIR routes: `/fhir/.well-known/...` is not a read of a type ".well-known".
    app.include_router(smart_router)
    app.include_router(bulk_router)  # before router: its operations need the base URL
    app.include_router(care_gaps_router)  # before router: as bulk_router
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(reports_router)
    app.include_router(ws_router)
    app.include_router(hl7v2_router)
    app.include_router(apps_router)

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
    # Innermost: the audit reads the members an answer holds before it is compressed.
    # Innermost: reads and searches without the router (routes/fhir.py), audited as others.
    app.add_middleware(DirectRoutes)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
    # Outermost, one layer: the access log, CORS when configured, the request id, nosniff and
    # the negotiated Content-Type, and the error guard (routes/edge.py says in which order).
    # Reads and vreads are answered in front of all of these (`Server`).
    origins = parse_origins(settings.cors_origins)
    app.add_middleware(Edge, cors=cors_options(origins) if origins else None)
    app.cors = bool(origins)
    return app
