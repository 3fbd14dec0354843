"""The sender's HTTP client: POSTs notification Bundles over HTTP/1.1 connections kept alive
per endpoint origin (scheme, host, port) and reused one request at a time.

A rest-hook send is one small POST whose answer only matters by its status, so this does
only that: write the request, read the status line, the headers and the body (by
Content-Length, chunked, or up to the close), and put the connection back when both sides
keep it. That costs a fraction of the CPU of a general client's send (httpx: URL and header
models, a pool that looks at every connection of every origin for each request), which on
the sender's busy rounds is most of what a notification costs. No proxies (the sender uses
httpx when the environment names any), no redirects (a 3xx is an answer: not delivered),
no HTTP/2, no pipelining. Errors are `PostError`s named as httpx names them
(`ConnectError`, `ReadTimeout`, ...): the name is what the attempt records.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

__all__ = ["Endpoints", "PostError"]

# What a header name or value may not hold (it would end the header, or the request).
_FORBIDDEN = str.maketrans("", "", "\r\n\x00")
# Longest status line or header line read; longest header block.
_MAX_LINE = 16 * 1024
_MAX_HEADERS = 100
# What a request target keeps as it is (the rest %-escaped; a % kept: already escaped).
_PATH_SAFE = "/:@!$&'()*+,;=-._~%?"


class PostError(Exception):
    """A send that got no usable answer; `name` is what the attempt records."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(detail or name)
        self.name = name


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


@dataclass(slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    idle: list[_Connection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    head: bytes  # "POST /path HTTP/1.1\r\nHost: ...\r\n"


class Endpoints:
    """Keep-alive connections per origin; `post` sends one request on an idle connection of
    the endpoint's origin (or a new one) and keeps the connection for the next when the
    answer allows it. Idle connections older than `idle_s` are closed rather than reused
    (servers close theirs after a few seconds: uvicorn 5, nginx 75)."""

    def __init__(self, *, idle_s: float = 4.0, max_idle: int = 64) -> None:
        self.idle_s = idle_s
        self.max_idle = max_idle
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, _Target] = {}
        self._ssl: ssl.SSLContext | None = None
        self._swept = time.monotonic()
        # Connections opened so far (tests: reuse is seen as fewer opened than sent).
        self.opened = 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], limit_s: float) -> int:
        """POST `body` to `url` with `headers` (besides Host and Content-Length); the answer's
        status code, within `limit_s` seconds in all (connecting included). Raises `PostError`."""
        target = self._target(url)
        origin = self._origins[target.origin]
        if time.monotonic() - self._swept > self.idle_s:
            self._sweep()
        lines = [target.head]
        for name, value in headers.items():
            if name != name.translate(_FORBIDDEN) or value != value.translate(_FORBIDDEN):
                raise PostError("LocalProtocolError", "a header holds a line break")
            lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        request = b"".join(lines) + body
        deadline = time.monotonic() + limit_s
        while True:
            connection, reused = self._idle(origin), True
            if connection is None:
                connection, reused = await self._connect(origin, deadline), False
            try:
                status, keep = await self._exchange(connection, request, deadline, reused)
            except _Stale:
                # The server closed the kept connection before reading this request: nothing
                # was delivered on it, so the request goes again on a new connection.
                _close(connection)
                continue
            except BaseException:
                _close(connection)
                raise
            if keep and len(origin.idle) < self.max_idle:
                connection.idle_since = time.monotonic()
                origin.idle.append(connection)
            else:
                _close(connection)
            return status

    async def aclose(self) -> None:
        for origin in self._origins.values():
            for connection in origin.idle:
                _close(connection)
            origin.idle.clear()

    def _target(self, url: str) -> _Target:
        found = self._targets.get(url)
        if found is not None:
            return found
        try:
            parts = urlsplit(url)
            hostname, port = parts.hostname, parts.port  # a bad port raises ValueError
            if parts.scheme not in ("http", "https") or not hostname:
                raise ValueError(url)
            # A name beyond ASCII in its IDNA form; a path's other characters %-escaped.
            name = hostname.encode("idna").decode("ascii")
        except (ValueError, UnicodeError):
            raise PostError("UnsupportedProtocol", "not an http(s) URL") from None
        standard = 443 if parts.scheme == "https" else 80
        port = port or standard
        key = (parts.scheme, name, port)
        if key not in self._origins:
            self._origins[key] = _Origin(parts.scheme, name, port)
        host = name if ":" not in name else f"[{name}]"
        host = host if port == standard else f"{host}:{port}"
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
        target = _Target(key, head)
        if len(self._targets) > 10_000:  # endpoints come and go: keep the cache bounded
            self._targets.clear()
        self._targets[url] = target
        return target

    def _sweep(self) -> None:
        """Close every origin's connections idle too long (an endpoint no longer sent to
        would otherwise keep its sockets open until the sender stops)."""
        now = self._swept = time.monotonic()
        for origin in self._origins.values():
            kept = [c for c in origin.idle if now - c.idle_since < self.idle_s]
            for connection in origin.idle:
                if now - connection.idle_since >= self.idle_s:
                    _close(connection)
            origin.idle = kept

    def _idle(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        while origin.idle:
            connection = origin.idle.pop()  # the most recently used: the likeliest alive
            if now - connection.idle_since < self.idle_s and not connection.reader.at_eof():
                return connection
            _close(connection)
        return None

    async def _connect(self, origin: _Origin, deadline: float) -> _Connection:
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                # The trust httpx gives (its CA bundle, SSL_CERT_FILE / SSL_CERT_DIR).
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=context, limit=_MAX_LINE * 4
                )
        except TimeoutError:
            raise PostError("ConnectTimeout") from None
        except (OSError, ssl.SSLError) as error:
            raise PostError("ConnectError", type(error).__name__) from None
        self.opened += 1
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: bytes, deadline: float, reused: bool
    ) -> tuple[int, bool]:
        """Write the request, read the answer: (status, whether the connection may serve
        another request)."""
        reader, writer = connection.reader, connection.writer
        written = received = False
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                writer.write(request)
                await writer.drain()
                written = True
                while True:
                    line = await reader.readuntil(b"\r\n")
                    received = True
                    status, keep = _status(line)
                    headers = await _headers(reader)
                    if 100 <= status < 200:  # informational: the answer follows
                        continue
                    break
                keep = _keeps(headers, keep)
                if status in (204, 304):
                    return status, keep
                chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                if chunked:
                    await _chunked(reader)
                elif "content-length" in headers:
                    try:
                        length = int(headers["content-length"])
                    except ValueError:
                        raise PostError("RemoteProtocolError", "bad Content-Length") from None
                    await _discard(reader, length)
                else:
                    await _discard(reader, None)  # the body runs to the close
                    keep = False
                return status, keep
        except TimeoutError:
            raise PostError("ReadTimeout" if written else "WriteTimeout") from None
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            if reused and not received:
                raise _Stale from None
            name = "ReadError" if isinstance(error, ConnectionError) else "RemoteProtocolError"
            raise PostError(name, type(error).__name__) from None
        except asyncio.LimitOverrunError:
            raise PostError("RemoteProtocolError", "a line too long") from None
        except OSError as error:
            if reused and not received:
                raise _Stale from None
            raise PostError("ReadError", type(error).__name__) from None


class _Stale(Exception):
    """A kept connection the server had closed."""


def _loop_time(deadline: float) -> float:
    """`deadline` (time.monotonic) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _status(line: bytes) -> tuple[int, bool]:
    """The status code of a status line, and whether its version keeps the connection by
    default (HTTP/1.1)."""
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or not code.isdigit():
        raise PostError("RemoteProtocolError", "not an HTTP/1.x answer")
    return int(code), version == b"HTTP/1.1"


async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise PostError("RemoteProtocolError", "a header without a colon")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise PostError("RemoteProtocolError", "too many headers")


def _keeps(headers: Mapping[str, str], default: bool) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return default or "keep-alive" in tokens


async def _chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise PostError("RemoteProtocolError", "bad chunk size") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        await _discard(reader, size + 2)


async def _discard(reader: asyncio.StreamReader, length: int | None) -> None:
    """Read `length` bytes (None: up to the end) without keeping them."""
    while length is None or length > 0:
        chunk = await reader.read(65536 if length is None else min(length, 65536))
        if not chunk:
            if length is None:
                return
            raise asyncio.IncompleteReadError(b"", length)
        if length is not None:
            length -= len(chunk)


def _close(connection: _Connection) -> None:
    with contextlib.suppress(Exception):
        connection.writer.close()
