"""Last line of defence: an unexpected exception becomes a 500 OperationOutcome, and the log
gets its type and where it happened, never its message (which may quote member data)."""

from __future__ import annotations

import logging
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.errors import Issue, operation_outcome
from cmfhir.resources.fhirjson import dump_json

__all__ = ["ErrorGuard"]

log = logging.getLogger("cmfhir.errors")


class ErrorGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(frames[-6:]))
            log.error("unhandled %s at %s", type(error).__name__, where)
            if started:
                raise
            body = dump_json(operation_outcome([Issue("Internal server error", code="exception")]))
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/fhir+json; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
