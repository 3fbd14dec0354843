"""The FHIR RESTful API under `/fhir` (https://hl7.org/fhir/R4/http.html): each endpoint
parses the request, calls one interaction, and renders its result. Operations (`$code` at
system, type and instance level, https://hl7.org/fhir/R4/operations.html) are routed first,
so `Patient/$validate` is never taken for a read of id `$validate`.

The two hottest endpoints, `GET /fhir/{type}/{id}` (read) and `GET /fhir/{type}` (search),
are also served by `DirectRoutes`, in front of the router: the same handlers, called
without matching the path against every route before them and without FastAPI's dependency
solving (together a third of a read's CPU). Reads, vreads and searches reach them only when
the read path (`read_path.py`), in front of the whole stack, sent them on (a `HEAD`, a
cross-origin request with CORS configured, a negotiation that fails)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from cmfhir.errors import FhirError, MethodNotAllowed, UnsupportedMediaType
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
from cmfhir.interactions.audit import audited
from cmfhir.interactions.context import FhirContext
from cmfhir.interactions.operations import invoke
from cmfhir.interactions.read import Conditions
from cmfhir.resources.fhirjson import parse_json
from cmfhir.routes.bearer import authorize_request
from cmfhir.routes.http import (
    JSON_TYPES,
    base_url,
    error_response,
    http_error_response,
    media_type,
    prefer,
    read_body,
    read_json,
    render,
)
from cmfhir.routes.smart import with_security
from cmfhir.search import selection_query

__all__ = ["DirectRoutes", "router"]

router = APIRouter(prefix="/fhir")


async def get_context(request: Request) -> FhirContext:
    """The server's context for this request, in the FHIR version it negotiated
    (`routes.wire` put it in the request's state)."""
    context: FhirContext = request.app.state.fhir
    version = request.scope.get("state", {}).get("fhir_version")
    context = context if version is None else context.for_request(version)
    # Acting as the request's bearer token (routes/bearer.py).
    context = await authorize_request(request, context)
    # Its writes audited in their own transactions (routes/audit.py).
    audit = request.scope.get("state", {}).get("audit")
    return context if audit is None else audited(context, audit)


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


def _conditions(request: Request) -> Conditions | None:
    headers = request.headers
    if_none_match = headers.get("if-none-match")
    if_modified_since = headers.get("if-modified-since")
    if if_none_match is None and if_modified_since is None:
        return None
    return Conditions(if_none_match, if_modified_since)


async def _operation_body(request: Request) -> Any:
    """A POSTed operation's body, parsed (None when there is none)."""
    if request.method != "POST":
        return None
    kind = media_type(request)
    raw = await read_body(request)
    if not raw.strip():
        return None
    if kind is not None and kind not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{kind}' is not supported here; use application/fhir+json"
        )
    return parse_json(raw)


async def _operation(
    request: Request, ctx: FhirContext, code: str, resource_type: str | None, id: str | None
) -> Response:
    if request.method not in ("GET", "POST"):
        # Routed here so that `PUT Patient/$x` is never taken for an update of id `$x`.
        raise MethodNotAllowed(
            f"Operations are invoked with GET or POST, not {request.method}",
            headers={"Allow": "GET, POST"},
        )
    result = await invoke(
        ctx,
        code,
        resource_type=resource_type,
        id=id,
        method=request.method,
        query=_query(request),
        body=await _operation_body(request),
        plain_json=bool(request.scope.get("state", {}).get("plain_json")),
    )
    return render(result, request)


@router.get("/${operation}")
@router.post("/${operation}")
@router.put("/${operation}")
@router.patch("/${operation}")
@router.delete("/${operation}")
async def operation_system(operation: str, request: Request, ctx: Ctx) -> Response:
    return await _operation(request, ctx, operation, None, None)


@router.get("/{resource_type}/${operation}")
@router.post("/{resource_type}/${operation}")
@router.put("/{resource_type}/${operation}")
@router.patch("/{resource_type}/${operation}")
@router.delete("/{resource_type}/${operation}")
async def operation_type(
    resource_type: str, operation: str, request: Request, ctx: Ctx
) -> Response:
    return await _operation(request, ctx, operation, resource_type, None)


@router.get("/{resource_type}/{id}/${operation}")
@router.post("/{resource_type}/{id}/${operation}")
@router.put("/{resource_type}/{id}/${operation}")
@router.patch("/{resource_type}/{id}/${operation}")
@router.delete("/{resource_type}/{id}/${operation}")
async def operation_instance(
    resource_type: str, id: str, operation: str, request: Request, ctx: Ctx
) -> Response:
    return await _operation(request, ctx, operation, resource_type, id)


@router.get("/metadata")
async def metadata(request: Request, ctx: Ctx) -> Response:
    result = await capabilities(ctx, base=base_url(request))
    if request.app.state.settings.auth == "smart" and isinstance(result.body, dict):
        result.body = with_security(result.body, request)
    return render(result, request)


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
    result = await read(ctx, resource_type, id, _query(request), _conditions(request))
    return render(result, request)


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
    result = await vread(ctx, resource_type, id, version_id, _query(request), _conditions(request))
    return render(result, request)


# What the router would give these paths: a type is a FHIR type name (capitalised; every
# other GET route under /fhir starts its first segment with `$`, `_`, `.` or a lowercase
# letter) and an id has FHIR's id characters (no `$` or `_`, which other routes'
# second segments start with). tests/rest/test_direct_routes.py checks this against the
# application's routes.
# routes/read_path.py takes the same shapes.
TYPE_PATTERN = r"[A-Z][A-Za-z]{0,63}"
ID_PATTERN = r"[A-Za-z0-9\-.]{1,64}"
_READ = re.compile(rf"/fhir/({TYPE_PATTERN})/({ID_PATTERN})")
SEARCH_PATH = re.compile(rf"/fhir/({TYPE_PATTERN})")

Endpoint = Callable[[Request, FhirContext], Awaitable[Response]]


class DirectRoutes:
    """`GET /fhir/{type}/{id}` and `GET /fhir/{type}` straight to `read_instance` and
    `search_type`, with the context `get_context` gives every route (bearer token, scopes,
    audit) and the error rendering the application's exception handlers give; any other
    request goes on to the router. Placed inside the audit middleware, so reads and
    searches are audited as before."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            if (match := _READ.fullmatch(path)) is not None:
                resource_type, id = match.groups()
                await _direct(
                    scope,
                    receive,
                    send,
                    lambda request, ctx: read_instance(resource_type, id, request, ctx),
                )
                return
            if (match := SEARCH_PATH.fullmatch(path)) is not None:
                resource_type = match[1]
                await _direct(
                    scope,
                    receive,
                    send,
                    lambda request, ctx: search_type(resource_type, request, ctx),
                )
                return
        await self.app(scope, receive, send)


async def _direct(scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
    request = Request(scope, receive)
    try:
        response = await endpoint(request, await get_context(request))
    except FhirError as error:
        response = error_response(error)
    except StarletteHTTPException as error:
        response = http_error_response(error)
    await response(scope, receive, send)
