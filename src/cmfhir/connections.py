"""Connections that send nothing, or trickle their headers, are closed.

uvicorn's `timeout_keep_alive` only starts once a response has been sent, so a connection
that never completes a request head would stay open for ever, each holding a file
descriptor: enough of them and no client can connect. This protocol (uvicorn's httptools
one) gives every request head `header_timeout` seconds from its connection, or from the end
of the previous response, closes a connection whose body stops arriving for as long, and
keeps at most `max_connections` open, closing the connection that has waited longest for a
request head to make room for a new one.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cmfhir.config import Settings

__all__ = ["GuardedHttpProtocol", "ProtocolLimits"]


class ProtocolLimits:
    def __init__(self, header_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.max_connections = max_connections


@functools.cache
def _limits() -> ProtocolLimits:
    # Read once per process: uvicorn's worker processes get the class by its import path
    # and the settings through the environment they inherit.
    settings = Settings()
    return ProtocolLimits(settings.header_timeout_s, settings.max_connections)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request-head and stalled-body timeouts and a cap
    on open connections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0  # when it started waiting for a request head
        self._body_timer: asyncio.TimerHandle | None = None

    def _waiting(self) -> bool:
        return self._head_timer is not None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._waiting_since = time.monotonic()
            self._head_timer = self.loop.call_later(_limits().header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_pause_starts(self) -> None:
        """A body that stops arriving for as long as a head may take is given up on: the
        application sees the client leave (and answers no one)."""
        self._body_pause_ends()
        self._body_timer = self.loop.call_later(_limits().header_timeout, self._body_stalled)

    def _body_pause_ends(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_stalled(self) -> None:
        self._body_timer = None
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
        oldest = min(waiting, key=lambda c: c._waiting_since, default=self)
        oldest._disarm()
        oldest.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
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
        super().on_headers_complete()

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
