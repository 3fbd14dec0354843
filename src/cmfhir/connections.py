"""Connections that send nothing, or trickle their headers, are closed; a small answer
leaves in one write.

uvicorn's `timeout_keep_alive` only starts once a response has been sent, so a connection
that never completes a request head would stay open for ever, each holding a file
descriptor: enough of them and no client can connect. This protocol (uvicorn's httptools
one) gives every request head `header_timeout` seconds from its connection, or from the end
of the previous response, closes a connection whose body stops arriving for as long, and
keeps at most `max_connections` open, closing the connection that has waited longest for a
request head to make room for a new one. The deadlines are times kept on each connection
and checked by one timer per process (`_Sweep`, a few times per timeout, at most every
second), not a timer set and cancelled three times per request.

uvicorn writes a response's head and its body apart: two sends, two TCP segments and two
wake-ups of the client for an answer of a few hundred bytes. A head with a body of known
length to follow is held back and sent with the body's first part (`_WholeResponse`).
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from cmfhir.config import Settings

__all__ = ["GuardedHttpProtocol", "ProtocolLimits"]


class ProtocolLimits:
    def __init__(self, header_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        # How often the deadlines are checked: a timeout is kept to within a quarter of it.
        self.sweep_interval = min(1.0, header_timeout / 4)


@functools.cache
def _limits() -> ProtocolLimits:
    # Read once per process: uvicorn's worker processes get the class by its import path
    # and the settings through the environment they inherit.
    settings = Settings()
    return ProtocolLimits(settings.header_timeout_s, settings.max_connections)


class _Sweep:
    """One timer per event loop that closes the connections past a deadline; it runs while
    the server has connections."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.handle: asyncio.TimerHandle | None = None

    def ensure(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(_limits().sweep_interval, self.run)

    def run(self) -> None:
        self.handle = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, GuardedHttpProtocol):
                connection._check(now)
        if self.connections:
            self.ensure()


_SWEEPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()


class _WholeResponse:
    """The transport as one response cycle writes to it: the head of a response whose body
    of known length follows is held back and written with the body's first part."""

    __slots__ = ("cycle", "head", "seen_head", "transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head: bytes | None = None
        self.seen_head = False

    def write(self, data: bytes) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head + data)
            return
        cycle = self.cycle
        if not self.seen_head and cycle.response_started:
            # The head: uvicorn has read its Content-Length (or chosen chunks) by now. A
            # HEAD answer and a body of length 0 send nothing after it.
            self.seen_head = True
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self.head = data
                return
        self.transport.write(data)

    def close(self) -> None:
        head = self.head
        if head is not None:
            self.head = None
            self.transport.write(head)
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Anything else a cycle may ask of its transport, from the transport itself.
        return getattr(self.transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request-head and stalled-body timeouts, a cap on
    open connections, and a small answer's head and body in one write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the request head (or the stalled body) must have arrived; None: not waiting.
        self._head_deadline: float | None = None
        self._body_deadline: float | None = None

    def _waiting(self) -> bool:
        return self._head_deadline is not None

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.time() + _limits().header_timeout

    def _disarm(self) -> None:
        self._head_deadline = None

    def _check(self, now: float) -> None:
        """Close the connection if its request head, or its stalled body, is overdue."""
        if self._head_deadline is not None and now >= self._head_deadline:
            self._head_deadline = None
            if not self.transport.is_closing():
                self.transport.close()
        elif self._body_deadline is not None and now >= self._body_deadline:
            self._body_stalled()

    def _body_pause_starts(self) -> None:
        """A body that stops arriving for as long as a head may take is given up on: the
        application sees the client leave (and answers no one)."""
        self._body_deadline = self.loop.time() + _limits().header_timeout

    def _body_pause_ends(self) -> None:
        self._body_deadline = None

    def _body_stalled(self) -> None:
        self._body_deadline = None
        if self.flow.read_paused:  # the server stopped reading, not the client sending
            self._body_pause_starts()
        elif not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Past the cap, close the connection that has waited longest for a request head
        (this one, if every other is busy with a request)."""
        if len(self.connections) <= _limits().max_connections:
            return
        waiting = [
            c for c in self.connections if isinstance(c, GuardedHttpProtocol) and c._waiting()
        ]
        oldest = min(waiting, key=lambda c: c._head_deadline or 0.0, default=self)
        oldest._disarm()
        oldest.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        sweep = _SWEEPS.get(self.loop)
        if sweep is None or sweep.connections is not self.connections:
            sweep = _SWEEPS[self.loop] = _Sweep(self.loop, self.connections)
        sweep.ensure()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_pause_ends()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._body_pause_starts()
        started = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not started:  # a request, not an upgrade to a WebSocket
            cycle.transport = _WholeResponse(self.transport, cycle)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        self._body_pause_starts()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_pause_ends()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request: uvicorn's keep-alive timeout closes it, and the
        # connection counts as waiting when room must be made.
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()
