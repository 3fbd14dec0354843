"""The one ASGI middleware every request passes: the access log (`access_log.py`), what every
response carries and the FHIR negotiation (`wire.py`), and the last line of defence against
unexpected exceptions (`guard.py`), in that order from the outside in, with CORS (when
configured) between the access log and the rest, so that a 406 or a 500 carries the CORS
headers a browser needs to read it and a preflight is timed and logged too.

They were three middlewares, each wrapping every request and its `send` once more; as one
they cost one layer."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.errors import FhirError
from cmfhir.logs import REQUEST_ID
from cmfhir.resources.fhir_versions import DEFAULT_VERSION
from cmfhir.routes.access_log import write_access_line
from cmfhir.routes.cors import CORSMiddleware
from cmfhir.routes.guard import internal_error, report_unhandled
from cmfhir.routes.negotiation import negotiate
from cmfhir.routes.wire import format_param, request_id_from, response_headers, send_error

__all__ = ["Edge"]


class Edge:
    def __init__(
        self, app: ASGIApp, *, prefix: str = "/fhir", cors: dict[str, Any] | None = None
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.cors: ASGIApp | None = CORSMiddleware(self._inside_cors, **cors) if cors else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                sent_id = value
                break
        state = scope.setdefault("state", {})
        rid: str = state.get("request_id") or request_id_from(sent_id)
        state["request_id"] = rid
        token = REQUEST_ID.set(rid)
        status: int | None = None
        size = 0

        async def edge_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                version = state.get("fhir_version", DEFAULT_VERSION)
                message["headers"] = response_headers(message.get("headers", ()), rid, version)
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            if self.cors is not None:
                await self.cors(scope, receive, edge_send)
            else:
                await self._guarded(scope, receive, edge_send, lambda: status is not None)
        except Exception:
            status = status or 500
            raise
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            write_access_line(scope, rid, status, elapsed, size)
            REQUEST_ID.reset(token)

    async def _inside_cors(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self._guarded(scope, receive, tracking_send, lambda: started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, started: Any) -> None:
        """Negotiate a FHIR request, then run the application; an exception it lets out is
        logged by type and place and answered 500, unless the answer had begun."""
        path: str = scope["path"]
        if path == self.prefix or path.startswith(self.prefix + "/"):
            accept = content_type = None
            for name, value in scope["headers"]:
                if name == b"accept":
                    accept = value.decode("latin-1")
                elif name == b"content-type":
                    content_type = value.decode("latin-1")
            try:
                negotiated = negotiate(
                    accept, format_param(scope.get("query_string", b"")), content_type
                )
            except FhirError as error:
                await send_error(error, send)
                return
            state = scope["state"]
            state["fhir_version"] = negotiated.fhir_version
            state["plain_json"] = negotiated.plain_json
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            report_unhandled(error)
            if started():
                raise
            await internal_error(send)
