"""Last line of defence: an unexpected exception becomes a 500 OperationOutcome, and the log
gets its type and where it happened, never its message (which may quote member data).
`edge.Edge` applies it to every request."""

from __future__ import annotations

import logging
import traceback

from starlette.types import Send

from cmfhir.errors import Issue, operation_outcome
from cmfhir.resources.fhirjson import dump_json

__all__ = ["internal_error", "report_unhandled"]

log = logging.getLogger("cmfhir.errors")


def report_unhandled(error: BaseException) -> None:
    frames = traceback.extract_tb(error.__traceback__)
    where = " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(frames[-6:]))
    log.error("unhandled %s at %s", type(error).__name__, where)


async def internal_error(send: Send) -> None:
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
