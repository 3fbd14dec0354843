"""The access log: one line per request (time, request id, method, path, status, duration,
response size, client, user), written by the outermost middleware (`edge.Edge`). The request
id is the client's `X-Request-Id` when it is a plain token, else one made there; it is set on
the response, in `request.state.request_id`, and on every log line written while the
request runs. `client` is the token's OAuth client id and `user` its `fhirUser` reference
(`Practitioner/ID`), both `-` without a token (CMFHIR_AUTH=off, public paths, refused
tokens); a Patient or RelatedPerson id a client chose is hidden like one in a path, since a
member's id may be their record number.

Query strings and client-chosen ids carry names and birth dates, so the path is logged with
query values removed (`/fhir/Patient?name=&birthdate=`) and every segment or parameter name
the server does not know replaced (`/fhir/Patient/{id}`).

A line is a record of the `cmfhir.access` logger handed to its handlers as `log.info` would
hand it, made from the attributes every access record shares (`_AccessRecords`): `log.info`
looked for its caller and rebuilt those attributes on every request, a fifth of a cached
read's CPU."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from typing import Any
from urllib.parse import unquote_plus

from starlette.types import Scope

from cmfhir.resources.types import RESOURCE_TYPES

__all__ = ["loggable_path", "write_access_line"]

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


_MEMBER_TYPES = ("Patient", "RelatedPerson")


def _who(scope: Scope) -> tuple[str | None, str | None]:
    """The (client id, fhirUser) of the request's token, if it had a valid one."""
    principal = scope.get("state", {}).get("principal")
    if principal is None:
        return None, None
    client: str | None = getattr(principal, "client_id", None)
    user: str | None = getattr(principal, "fhir_user", None)
    if user is not None:
        kind, _, id = user.partition("/")
        if kind in _MEMBER_TYPES and not _SERVER_ID.fullmatch(id):
            user = f"{kind}/{_HIDDEN}"
    return client, user


_MESSAGE = "%s %s %s %.1fms %dB client=%s user=%s"


class _AccessRecords:
    """Records of the access log with the attributes `Logger.info` gives them, the ones
    every access record shares made once per process from an ordinary record."""

    def __init__(self) -> None:
        self._pid = -1
        self._shared: dict[str, Any] = {}
        self._start = 0.0  # logging's start time, in seconds

    def _make_shared(self) -> None:
        code = write_access_line.__code__
        record = log.makeRecord(
            log.name, logging.INFO, code.co_filename, code.co_firstlineno, _MESSAGE, (), None,
            func=code.co_name,
        )  # fmt: skip
        self._shared = dict(vars(record))
        self._start = record.created - record.relativeCreated / 1000
        self._pid = os.getpid()

    def make(self, args: tuple[Any, ...], fields: dict[str, Any]) -> logging.LogRecord:
        if os.getpid() != self._pid:
            self._make_shared()  # the first line, or in a new process
        record = logging.LogRecord.__new__(logging.LogRecord)
        attributes = record.__dict__
        attributes.update(self._shared)
        now = time.time_ns()
        created = now / 1e9
        attributes["created"] = created
        attributes["msecs"] = (now % 1_000_000_000) // 1_000_000 + 0.0
        attributes["relativeCreated"] = (created - self._start) * 1000
        attributes["args"] = args
        attributes["access"] = fields
        if logging.logThreads:
            attributes["thread"] = threading.get_ident()
            attributes["threadName"] = threading.current_thread().name
        if "taskName" in attributes:  # Python 3.12 on
            task = None
            if getattr(logging, "logAsyncioTasks", True):
                with contextlib.suppress(RuntimeError):
                    task = asyncio.current_task()
            attributes["taskName"] = task.get_name() if task is not None else None
        return record


_RECORDS = _AccessRecords()


def write_access_line(
    scope: Scope, request_id: str, status: int | None, elapsed: float, size: int
) -> None:
    """The request's line, once its response has ended (`edge.Edge` times it)."""
    if not log.isEnabledFor(logging.INFO):
        return  # CMFHIR_LOG_LEVEL above info: no line, so no path to clean either
    path = loggable_path(scope["path"], scope.get("query_string", b""), _search_codes(scope))
    client, user = _who(scope)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": scope["method"],
        "path": path,
        "status": status,
        "duration_ms": round(elapsed, 1),
        "bytes": size,
        "client": client,
        "user": user,
    }
    args = (
        scope["method"],
        path,
        status if status is not None else "-",
        elapsed,
        size,
        client or "-",
        user or "-",
    )
    log.handle(_RECORDS.make(args, fields))
