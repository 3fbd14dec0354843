"""The HTTP edge: request bodies within limits, Prefer and Content-Type handling, and turning
an interaction's `Result` or error into a FHIR response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cmfhir.errors import (
    BadRequest,
    FhirError,
    Issue,
    PayloadTooLarge,
    UnsupportedMediaType,
    operation_outcome,
)
from cmfhir.interactions.context import Result
from cmfhir.resources.fhirjson import dump_json, parse_json
from cmfhir.resources.sizes import MAX_STRING_BYTES, check_string_sizes
from cmfhir.routes.wire import http_date

__all__ = [
    "FHIR_JSON",
    "base_url",
    "error_response",
    "http_error_response",
    "media_type",
    "prefer",
    "read_body",
    "read_json",
    "render",
]

log = logging.getLogger(__name__)


class ClientGone(BadRequest):
    """The client went away mid-request: answered (to no one) like any bad request."""


FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
PATCH_TYPES = {"application/json-patch+json"}


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header as a dict: {'return': 'minimal', 'handling': 'strict'}."""
    out: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.lower()] = value.strip().strip('"').lower()
    return out


def media_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower()


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 past the configured limit (before reading it all)."""
    limit: int = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; nothing was done. Not a server error, so not logged
        # as one (the ErrorGuard would).
        raise ClientGone("The client closed the connection before sending the whole body") from None
    return b"".join(chunks)


async def read_json(request: Request, *, patch: bool = False) -> Any:
    kind = media_type(request)
    allowed = PATCH_TYPES if patch else JSON_TYPES
    if kind is not None and kind not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{kind}' is not supported here; use {' or '.join(sorted(allowed))}"
        )
    body = await read_body(request)
    if not body.strip():
        raise BadRequest("The request has no body")
    # Entries are counted as the body is parsed, so a Bundle past the limit is refused
    # before all of it is built (interactions.entries counts them again, exactly).
    document = parse_json(body, max_entries=request.app.state.settings.max_bundle_entries)
    # A JSON string is never shorter than its value, so only a larger body can hold one
    # too long. A JSON Patch is checked once applied (interactions.patch).
    if len(body) > MAX_STRING_BYTES and not patch:
        check_string_sizes(document)
    return document


def _headers(result: Result, request: Request) -> dict[str, str]:
    headers = dict(result.headers)
    if result.etag:
        headers["ETag"] = result.etag
    if result.last_updated is not None:
        headers["Last-Modified"] = http_date(result.last_updated)
    if result.location:
        # Only here: the base URL is rebuilt from the request's headers each time.
        headers["Location"] = f"{base_url(request)}/{result.location}"
        if result.status == 201:
            headers["Content-Location"] = headers["Location"]
    return headers


def render(result: Result, request: Request, *, write: bool = False) -> Response:
    headers = _headers(result, request)
    wanted = prefer(request).get("return") if write else None
    body = result.body
    if wanted == "minimal":
        return Response(status_code=result.status, headers=headers)
    if wanted == "operationoutcome":
        body = operation_outcome(
            [Issue(f"{result.status} OK", code="informational", severity="information")]
        )
    media = result.media_type or FHIR_JSON
    if result.stream is not None:
        return StreamingResponse(
            result.stream, status_code=result.status, headers=headers, media_type=media
        )
    if body is None:
        return Response(status_code=result.status, headers=headers)
    content = body.encode() if isinstance(body, str) else dump_json(body)
    if request.query_params.get("_pretty") == "true":
        content = dump_json(parse_json(content), pretty=True)
    return Response(content, status_code=result.status, headers=headers, media_type=media)


def error_response(error: FhirError) -> Response:
    return Response(
        dump_json(error.outcome()),
        status_code=error.status,
        headers=error.headers,
        media_type=FHIR_JSON,
    )


def http_error_response(error: StarletteHTTPException) -> Response:
    code = {404: "not-found", 405: "not-supported"}.get(error.status_code, "processing")
    message = {404: "No such endpoint", 405: "Method not allowed here"}.get(
        error.status_code, str(error.detail)
    )
    outcome = operation_outcome([Issue(message, code=code)])
    return Response(
        dump_json(outcome),
        status_code=error.status_code,
        headers=dict(error.headers or {}),
        media_type=FHIR_JSON,
    )
