"""What every response carries, and the negotiation every FHIR request goes through, as one
ASGI middleware outside the error guard (so error responses get it too):

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
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmfhir.errors import FhirError
from cmfhir.logs import REQUEST_ID
from cmfhir.resources.fhir_versions import DEFAULT_VERSION, VERSIONS
from cmfhir.resources.fhirjson import dump_json
from cmfhir.routes.negotiation import negotiate

__all__ = ["Wire"]

_FHIR_JSON = b"application/fhir+json"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A new id is this process's random prefix and a counter: unique across processes and
# restarts without a random draw (a system call) per request.
_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count(1)
_CONTENT_TYPES = {
    version: b"application/fhir+json; fhirVersion=" + version.encode() + b"; charset=utf-8"
    for version in VERSIONS
}


def request_id_from(header: bytes | None) -> str:
    if header is not None:
        text = header.decode("latin-1")
        if _SANE_REQUEST_ID.fullmatch(text):
            return text
    return f"{_PREFIX}{next(_COUNTER):012x}"


def _format_param(query: bytes) -> str | None:
    if b"_format" not in query:
        return None
    for name, value in parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True):
        if name == "_format":
            return value
    return None


def _response_headers(headers: Any, rid: str, version: str) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = [
        (name, _CONTENT_TYPES.get(version, value))
        if name == b"content-type" and value.startswith(_FHIR_JSON)
        else (name, value)
        for name, value in headers
    ]
    out.append((b"x-content-type-options", b"nosniff"))
    out.append((b"x-request-id", rid.encode()))
    return out


class Wire:
    def __init__(self, app: ASGIApp, prefix: str = "/fhir") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = content_type = sent_id = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                sent_id = value
        state = scope.setdefault("state", {})
        rid: str = state.get("request_id") or request_id_from(sent_id)
        state["request_id"] = rid
        version = DEFAULT_VERSION

        async def finishing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _response_headers(message.get("headers", ()), rid, version)
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                try:
                    negotiated = negotiate(
                        accept, _format_param(scope.get("query_string", b"")), content_type
                    )
                except FhirError as error:
                    await _send_error(error, finishing_send)
                    return
                version = negotiated.fhir_version
                state["fhir_version"] = version
                state["plain_json"] = negotiated.plain_json
            await self.app(scope, receive, finishing_send)
        finally:
            REQUEST_ID.reset(token)


async def _send_error(error: FhirError, send: Send) -> None:
    body = dump_json(error.outcome())
    headers = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    headers += [
        (b"content-type", b"application/fhir+json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
