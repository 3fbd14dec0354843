"""The access log: one line per request (time, request id, method, path, status, duration,
response size, client, user), written by the outermost middleware. The request id is the
client's `X-Request-Id` when it is a plain token, else one made here (or the one an outer
middleware put in `scope["state"]["request_id"]`); it is set on the response, in
`request.state.request_id`, and on every log line written while the request runs.

Query strings and client-chosen ids carry names and birth dates, so the path is logged with
query values removed (`/fhir/Patient?name=&birthdate=`) and every segment or parameter name
the server does not know replaced (`/fhir/Patient/{id}`)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.logs import REQUEST_ID
from cmfhir.resources.types import RESOURCE_TYPES

__all__ = ["AccessLog", "loggable_path"]

log = logging.getLogger("cmfhir.access")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Ids the server assigns (UUIDs) and version ids; anything else a client chose is hidden.
_SERVER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VERSION = re.compile(r"[0-9]{1,6}")
_OPERATION = re.compile(r"\$[a-z][a-z-]{0,40}")
_WORDS = frozenset(
    {"fhir", "metadata", "_history", "_search", "healthz", "readyz", "openapi.json", ""}
)
# Search result and control parameters (https://hl7.org/fhir/R4B/search.html), modifiers
# and comparator-free words that may follow a `:` in a parameter name.
_CONTROL = frozenset(
    {
        "_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
        "_contained", "_containedType", "_format", "_pretty", "_cursor", "_since", "_at",
        "_list", "_has", "_text", "_content", "_filter", "_query", "_type", "_outputFormat",
        "_id", "_lastUpdated", "_tag", "_profile", "_security", "_source",
    }
)  # fmt: skip
_MODIFIERS = frozenset(
    {
        "exact", "contains", "missing", "text", "not", "above", "below", "in", "not-in",
        "of-type", "identifier", "iterate", "code-text", "text-advanced", "type", "*",
    }
)  # fmt: skip
_HIDDEN = "{id}"
_HIDDEN_PARAM = "{param}"


def _segment(segment: str) -> str:
    if (
        segment in _WORDS
        or segment in RESOURCE_TYPES
        or _SERVER_ID.fullmatch(segment)
        or _VERSION.fullmatch(segment)
        or _OPERATION.fullmatch(segment)
    ):
        return segment
    return _HIDDEN


def _parameter(name: str, codes: frozenset[str]) -> str:
    """A known parameter name kept as written (with its chain and modifiers), else hidden."""
    for part in re.split(r"[:.]", name):
        if not (part in codes or part in _CONTROL or part in _MODIFIERS or part in RESOURCE_TYPES):
            return _HIDDEN_PARAM
    return name


def loggable_path(path: str, query: bytes, codes: frozenset[str]) -> str:
    """`path` with unknown segments hidden and the query's names kept, values removed."""
    shown = "/".join(_segment(segment) for segment in path.split("/"))
    if not query:
        return shown
    names = []
    for pair in query.split(b"&"):
        raw = unquote_plus(pair.split(b"=", 1)[0].decode("latin-1"))
        if raw:
            names.append(_parameter(raw, codes) + "=")
    return f"{shown}?{'&'.join(names)}"


def _search_codes(scope: Scope) -> frozenset[str]:
    """Every search parameter code the server knows (empty before start-up finishes)."""
    app = scope.get("app")
    state = getattr(app, "state", None)
    codes = getattr(state, "log_codes", None)
    if isinstance(codes, frozenset):
        return codes
    context = getattr(state, "fhir", None)
    if context is None:
        return frozenset()
    codes = frozenset(parameter.code for parameter in context.registry)
    state.log_codes = codes  # type: ignore[union-attr]
    return codes


def _incoming_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.fullmatch(text) else None
    return None


class AccessLog:
    """Outermost middleware: times the request and writes its line when the response ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        # An id an outer middleware already chose is kept (one id per request everywhere).
        request_id = state.get("request_id") or _incoming_request_id(scope) or uuid.uuid4().hex
        state["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        status: int | None = None
        size = 0

        async def logged_send(message: Message) -> None:
            nonlocal status, size, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                answered = [v for k, v in headers if k.lower() == b"x-request-id"]
                if answered:  # set further in: log the id the client sees
                    request_id = answered[0].decode("latin-1")
                else:
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                    message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except Exception:
            status = status or 500
            raise
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self._write(scope, request_id, status, elapsed, size)
            REQUEST_ID.reset(token)

    def _write(
        self, scope: Scope, request_id: str, status: int | None, elapsed: float, size: int
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # CMFHIR_LOG_LEVEL above info: no line, so no path to clean either
        path = loggable_path(scope["path"], scope.get("query_string", b""), _search_codes(scope))
        if request_id != REQUEST_ID.get():
            REQUEST_ID.set(request_id)  # the id further in chose, on this line too
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "path": path,
            "status": status,
            "duration_ms": round(elapsed, 1),
            "bytes": size,
            # Filled once SMART authorization identifies them.
            "client": None,
            "user": None,
        }
        log.info(
            "%s %s %s %.1fms %dB client=- user=-",
            scope["method"],
            path,
            status if status is not None else "-",
            elapsed,
            size,
            extra={"access": fields},
        )
