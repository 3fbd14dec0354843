"""The sender's HTTP client: POSTs notification Bundles over HTTP/1.1 connections kept alive
per endpoint origin (scheme, host, port) and reused one request at a time.

A rest-hook send is one small POST whose answer only matters by its status, so this does
only that: an `h11.Connection` per kept socket writes the request and reads the answer to
its end (Content-Length, chunked or up to the close), and the socket goes back for the next
send when both sides keep it. That costs a fraction of the CPU of a general client's send
(httpx: URL and header models, a pool that looks at every connection of every origin for
each request), which on the sender's busy rounds is most of what a notification costs. No
proxies (the sender uses httpx when the environment names any), no redirects (a 3xx is an
answer: not delivered), no HTTP/2, no pipelining. Errors are `PostError`s named as httpx
names them (`ConnectError`, `ReadTimeout`, ...): the name is what the attempt records.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import h11
import httpx

__all__ = ["Endpoints", "PostError"]

# Longest answer head (status line and headers) read before giving up on it (h11 checks
# it while the head is incomplete: one arriving whole may pass it by up to one read).
_MAX_HEAD = 64 * 1024
_READ = 65536
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
    protocol: h11.Connection
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
    path: bytes  # the request target: path and query, %-escaped
    host: bytes  # the Host header


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
        fields = [(b"Host", target.host)]
        for name, value in headers.items():
            fields.append((name.encode("latin-1", "replace"), value.encode("latin-1", "replace")))
        fields.append((b"Content-Length", b"%d" % len(body)))
        try:
            # h11 checks each name and value (a line break in one would end the request).
            request = h11.Request(method=b"POST", target=target.path, headers=fields)
        except h11.LocalProtocolError as error:
            raise PostError("LocalProtocolError", str(error)) from None
        deadline = time.monotonic() + limit_s
        while True:
            connection, reused = self._idle(origin), True
            if connection is None:
                connection, reused = await self._connect(origin, deadline), False
            try:
                status, keep = await _exchange(connection, request, body, deadline, reused)
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
        target = _Target(key, path.encode("ascii"), host.encode("ascii"))
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
                    origin.host, origin.port, ssl=context
                )
        except TimeoutError:
            raise PostError("ConnectTimeout") from None
        except (OSError, ssl.SSLError) as error:
            raise PostError("ConnectError", type(error).__name__) from None
        self.opened += 1
        protocol = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        return _Connection(reader, writer, protocol)


async def _exchange(
    connection: _Connection, request: h11.Request, body: bytes, deadline: float, reused: bool
) -> tuple[int, bool]:
    """Write the request, read the answer to its end: (status, whether the connection may
    serve another request)."""
    reader, writer, protocol = connection.reader, connection.writer, connection.protocol
    written = received = closed = False
    status = 0
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            head = protocol.send(request) or b""
            writer.write(head + (protocol.send(h11.Data(data=body)) or b""))
            protocol.send(h11.EndOfMessage())  # Content-Length framing: nothing to write
            await writer.drain()
            written = True
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(_READ)
                    if not data:
                        if not received and reused:
                            raise _Stale
                        closed = True
                    received = True
                    protocol.receive_data(data)
                elif type(event) is h11.Response:
                    status = event.status_code
                elif type(event) is h11.EndOfMessage:
                    break
                elif event is h11.PAUSED or type(event) is h11.ConnectionClosed:
                    raise PostError("RemoteProtocolError", "no complete answer")
                # Informational answers (1xx) and the body's Data: read past.
    except TimeoutError:
        raise PostError("ReadTimeout" if written else "WriteTimeout") from None
    except h11.RemoteProtocolError as error:
        raise PostError("RemoteProtocolError", str(error)) from None
    except h11.LocalProtocolError as error:
        raise PostError("LocalProtocolError", str(error)) from None
    except OSError as error:  # ConnectionError, ssl.SSLError among them
        if reused and not received:
            raise _Stale from None
        raise PostError("ReadError" if written else "WriteError", type(error).__name__) from None
    # Kept when both sides are done with this exchange and neither ends the connection
    # (Connection: close, HTTP/1.0, or a body that ran to the close).
    keep = not closed and protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
    if keep:
        protocol.start_next_cycle()
    return status, keep


class _Stale(Exception):
    """A kept connection the server had closed."""


def _loop_time(deadline: float) -> float:
    """`deadline` (time.monotonic) on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _close(connection: _Connection) -> None:
    with contextlib.suppress(Exception):
        connection.writer.close()
