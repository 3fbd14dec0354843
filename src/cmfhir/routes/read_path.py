"""`GET /fhir/{type}/{id}` (read, https://hl7.org/fhir/R4/http.html#read),
`GET /fhir/{type}/{id}/_history/{vid}` (vread) and `GET /fhir/{type}?...` (search at type
level, https://hl7.org/fhir/R4/http.html#search) answered in front of the application's
whole middleware stack and router, as one plain ASGI handler. The stack cost a read most of
its CPU: FastAPI's outer layers, the edge, gzip and the route's Request, Response and
dependency solving, for a request that is one prepared statement; a search is one
statement too.

It does what the stack does for these requests, with the same functions: the request id,
negotiation and response headers of `wire.py`, the access log, the error guard, the bearer
token and scopes (`bearer.py`), the audit trail (the same `AuditMiddleware` wraps it), ETag,
Last-Modified and conditional reads (`interactions.read`), OperationOutcome errors, and gzip
as `GZipMiddleware` gives it (only answers of `GZIP_MINIMUM_BYTES` or more are held back to
be compressed; smaller ones go out at once). Stored JSON is served as stored, its headers
built once as bytes. A request it would have to answer otherwise than the stack does — a
browser's cross-origin request when CORS is configured, a `HEAD`, a negotiation that fails —
goes to the stack before anything is done (`tests/rest/test_read_path.py` compares the two
answers, reads and searches)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.errors import FhirError
from cmfhir.interactions import read, search, vread
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.read import Conditions
from cmfhir.logs import REQUEST_ID
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.routes.access_log import write_access_line
from cmfhir.routes.audit import AuditMiddleware
from cmfhir.routes.bearer import authorize_request
from cmfhir.routes.compression import GZIP_MINIMUM_BYTES, gzip_body
from cmfhir.routes.fhir import ID_PATTERN, SEARCH_PATH, TYPE_PATTERN
from cmfhir.routes.guard import internal_error, report_unhandled
from cmfhir.routes.http import base_url, prefer
from cmfhir.routes.negotiation import Negotiated, negotiate
from cmfhir.routes.wire import (
    CONTENT_TYPES,
    format_param,
    http_date,
    request_id_from,
    response_headers,
)

__all__ = ["READ_PATH", "SEARCH_PATH", "ReadPath"]

# The paths the router gives to `read_instance`, `vread_instance` and `search_type`, in the
# shapes routes/fhir.py gives them (a type is a capitalised name, an id has FHIR's id
# characters); tests/rest/test_direct_routes.py checks them against the application's routes.
READ_PATH = re.compile(rf"/fhir/({TYPE_PATTERN})/({ID_PATTERN})(?:/_history/({ID_PATTERN}))?")

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_VARY = (b"vary", b"Accept-Encoding")


class ReadPath:
    """Reads, vreads and type-level searches straight to the interactions; every other
    request to `app`, the application's middleware stack."""

    def __init__(self, app: ASGIApp, *, cors: bool = False) -> None:
        self.app = app
        # With CORS configured, a request with an Origin takes the stack (its CORS layer).
        self.cors = cors
        self._audited = AuditMiddleware(self._answer)
        # Counted for tests: requests answered here.
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        match = READ_PATH.fullmatch(path) or SEARCH_PATH.fullmatch(path)
        if match is None:
            await self.app(scope, receive, send)
            return
        sent_id = accept = content_type = encoding = None
        origin = False
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                sent_id = sent_id or value
            elif name == b"accept-encoding":
                encoding = encoding if encoding is not None else value
            elif name == b"origin":
                origin = True
        if origin and self.cors:
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        try:
            negotiated = negotiate(accept, format_param(query), content_type)
        except FhirError:
            await self.app(scope, receive, send)  # the edge answers it (406)
            return
        self.served += 1
        await self._serve(scope, receive, send, match, negotiated, sent_id, encoding)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        match: re.Match[str],
        negotiated: Negotiated,
        sent_id: bytes | None,
        encoding: bytes | None,
    ) -> None:
        """What `edge.Edge` does around a request, then the audited answer."""
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        rid: str = state.get("request_id") or request_id_from(sent_id)
        version = negotiated.fhir_version
        state["request_id"] = rid
        state["fhir_version"] = version
        state["plain_json"] = negotiated.plain_json
        # What the audit records (routes/audit.py): the read's or the search's own match.
        state["read_path" if match.re is READ_PATH else "search_path"] = match
        token = REQUEST_ID.set(rid)
        status: int | None = None
        size = 0
        gzip = encoding is not None and b"gzip" in encoding
        held: Message | None = None

        async def edge_send(message: Message) -> None:
            nonlocal status, size, held
            if message["type"] == "http.response.start":
                status = message["status"]
                if gzip and _length(message["headers"]) >= GZIP_MINIMUM_BYTES:
                    held = message  # sent with its body, compressed
                    return
            elif message["type"] == "http.response.body":
                if held is not None:
                    start, held = held, None
                    message["body"] = await gzip_body(message.get("body", b""))
                    start["headers"] = _gzipped(start["headers"], len(message["body"]))
                    await send(start)
                size += len(message.get("body", b""))
            await send(message)

        async def guard_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = response_headers(message.get("headers", ()), rid, version)
            await edge_send(message)

        try:
            await self._audited(scope, receive, edge_send)
        except Exception as error:
            report_unhandled(error)
            if status is not None:
                raise
            await internal_error(guard_send)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            write_access_line(scope, rid, status, elapsed, size)
            REQUEST_ID.reset(token)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The read, vread or search, as `routes.fhir` answers it."""
        state: dict[str, Any] = scope["state"]
        version: str = state["fhir_version"]
        query: bytes = scope.get("query_string", b"")
        # As Starlette's `query_params` parses it for the router's routes.
        params = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else []
        request = Request(scope, receive)
        try:
            context: FhirContext = scope["app"].state.fhir
            ctx = await authorize_request(request, context.for_request(version))
            read_match: re.Match[str] | None = state.get("read_path")
            if read_match is None:
                result = await search(
                    ctx,
                    state["search_path"][1],
                    params,
                    base=base_url(request),
                    handling=prefer(request).get("handling"),
                )
            else:
                result = await _read(ctx, read_match, params, scope["headers"])
        except FhirError as error:
            status, headers, body = _error(error, version)
        else:
            status, headers, body = _rendered(result, params, version)
        headers.append(_NOSNIFF)
        headers.append((b"x-request-id", state["request_id"].encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _read(
    ctx: FhirContext,
    match: re.Match[str],
    params: list[tuple[str, str]],
    headers: list[tuple[bytes, bytes]],
) -> Result:
    resource_type, id, version_id = match.groups()
    conditions = _conditions(headers)
    if version_id is None:
        return await read(ctx, resource_type, id, params, conditions)
    return await vread(ctx, resource_type, id, version_id, params, conditions)


def _conditions(headers: list[tuple[bytes, bytes]]) -> Conditions | None:
    if_none_match = if_modified_since = None
    for name, value in headers:
        if name == b"if-none-match":
            if if_none_match is None:
                if_none_match = value.decode("latin-1")
        elif name == b"if-modified-since" and if_modified_since is None:
            if_modified_since = value.decode("latin-1")
    if if_none_match is None and if_modified_since is None:
        return None
    return Conditions(if_none_match, if_modified_since)


def _rendered(
    result: Result, params: list[tuple[str, str]], version: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """`http.render`'s answer for a read's Result, its headers as the edge sends them."""
    headers = _encoded(result.headers)
    if result.version is not None:
        headers.append((b"etag", b'W/"%d"' % result.version))
    if result.last_updated is not None:
        headers.append((b"last-modified", http_date(result.last_updated).encode("latin-1")))
    body = result.body
    if body is None:
        return result.status, headers, b""
    content = body.encode() if isinstance(body, str) else dump_json(body)
    if dict(params).get("_pretty") == "true":
        content = dump_json(parse_json(content), pretty=True)
    headers.append((b"content-length", str(len(content)).encode("latin-1")))
    headers.append((b"content-type", CONTENT_TYPES[version]))
    if len(content) >= GZIP_MINIMUM_BYTES:
        headers.append(_VARY)
    return result.status, headers, content


def _error(error: FhirError, version: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """`http.error_response`, its headers as the edge sends them."""
    body = dump_json(error.outcome())
    headers = _encoded(error.headers)
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    headers.append((b"content-type", CONTENT_TYPES[version]))
    if len(body) >= GZIP_MINIMUM_BYTES:
        headers.append(_VARY)
    return error.status, headers, body


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """As Starlette's `Response` encodes the headers it is given."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0


def _gzipped(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    out = [
        (name, str(length).encode("latin-1")) if name == b"content-length" else (name, value)
        for name, value in headers
    ]
    out.append((b"content-encoding", b"gzip"))
    return out
