"""What every response carries, and the negotiation every FHIR request goes through
(`edge.Edge` applies them, outside the error guard, so error responses get them too):

- `X-Request-Id` and `X-Content-Type-Options: nosniff` on every response: the id the access
  log (outside) chose and put in `scope["state"]["request_id"]`, else the client's when it is
  a plain token, else a new one;
- under `/fhir`, the format and FHIR version negotiated (`routes.negotiation`): 406 with an
  OperationOutcome for XML, Turtle or an unsupported `fhirVersion`; otherwise the version is
  put in `scope["state"]["fhir_version"]` for the routes, and every `application/fhir+json`
  response says it: `Content-Type: application/fhir+json; fhirVersion=4.0`.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Send

from cmfhir.errors import FhirError
from cmfhir.resources.fhir_versions import VERSIONS
from cmfhir.resources.fhirjson import dump_json

__all__ = [
    "CONTENT_TYPES",
    "format_param",
    "http_date",
    "request_id_from",
    "response_headers",
    "send_error",
]

_FHIR_JSON = b"application/fhir+json"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A new id is this process's random prefix and a counter: unique across processes and
# restarts without a random draw (a system call) per request.
_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count(1)
CONTENT_TYPES = {
    version: b"application/fhir+json; fhirVersion=" + version.encode() + b"; charset=utf-8"
    for version in VERSIONS
}


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(moment: datetime) -> str:
    """An HTTP date (RFC 9110 5.6.7, `Last-Modified`) as `email.utils.format_datetime(moment,
    usegmt=True)` writes it, in a third of its time."""
    u = moment.astimezone(UTC)
    return (
        f"{_DAYS[u.weekday()]}, {u.day:02d} {_MONTHS[u.month - 1]} {u.year:04d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d} GMT"
    )


def request_id_from(header: bytes | None) -> str:
    if header is not None:
        text = header.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
    return f"{_PREFIX}{next(_COUNTER):012x}"


def format_param(query: bytes) -> str | None:
    if b"_format" not in query:
        return None
    for name, value in parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True):
        if name == "_format":
            return value
    return None


def response_headers(headers: Any, rid: str, version: str) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = [
        (name, CONTENT_TYPES.get(version, value))
        if name == b"content-type" and value.startswith(_FHIR_JSON)
        else (name, value)
        for name, value in headers
    ]
    out.append((b"x-content-type-options", b"nosniff"))
    out.append((b"x-request-id", rid.encode()))
    return out


async def send_error(error: FhirError, send: Send) -> None:
    body = dump_json(error.outcome())
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers += [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
