"""The request id: the client's `X-Request-Id` when it is sane, otherwise a new one. It is
echoed on every response and kept where the access log and error log can find it: the
`request_id` contextvar (set for the code that runs inside the request) and
`scope["state"]["request_id"]` (`request.state.request_id`)."""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar

__all__ = ["current_request_id", "request_id", "request_id_from"]

request_id: ContextVar[str | None] = ContextVar("cmfhir_request_id", default=None)

# Letters, digits and a few separators, as load balancers and tracing headers make them;
# anything else (spaces, control characters, 200 characters) is replaced, never logged.
_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# A new id is this process's random prefix and a counter: unique across processes and
# restarts without a random draw (a system call, ~20 us under load) per request.
_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count(1)


def request_id_from(header: bytes | None) -> str:
    if header is not None:
        try:
            text = header.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if _SANE.match(text):
            return text
    return f"{_PREFIX}{next(_COUNTER):012x}"


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return request_id.get()
