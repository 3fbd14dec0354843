"""An MLLP listener for HL7 v2 (HL7 v2.x Implementation Guide: Transport, MLLP release 2):
each message framed as <VT> message <FS><CR>, answered on the same connection with its ACK,
framed the same way. Peers not on the allow-list are disconnected at once; TLS when a
certificate is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator

from cmfhir.auth.principal import TRUSTED
from cmfhir.exchange.hl7v2 import receive
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext

__all__ = ["END", "START", "MllpListener", "frame", "mllp_listener"]

START = b"\x0b"
END = b"\x1c\x0d"

log = logging.getLogger(__name__)


def frame(text: str) -> bytes:
    return START + text.encode("utf-8") + END


def _decode(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin-1")


def _tls(settings: ExchangeSettings) -> ssl.SSLContext | None:
    if settings.mllp_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key)
    if settings.mllp_tls_client_ca is not None:
        context.load_verify_locations(settings.mllp_tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MllpListener:
    """Messages from allowed peers go to the ADT intake as the server itself (the
    allow-list, and the client certificate when required, are the authorization)."""

    def __init__(self, ctx: FhirContext, settings: ExchangeSettings, *, base: str) -> None:
        self.ctx = ctx.for_request(ctx.fhir_version)
        self.settings = settings
        self.base = base
        self.server: asyncio.Server | None = None

    async def start(self, port: int | None = None) -> int:
        """Listen (on `port`, else the configured one; 0 picks a free port) and return it."""
        chosen = self.settings.mllp_port if port is None else port
        self.server = await asyncio.start_server(
            self._serve,
            self.settings.mllp_host,
            chosen or 0,
            ssl=_tls(self.settings),
            reuse_port=True,
        )
        bound: int = self.server.sockets[0].getsockname()[1]
        log.info("MLLP listener on port %d", bound)
        return bound

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        try:
            if not self.settings.mllp_allows(host):
                log.warning("MLLP connection refused: peer not on the allow-list")
                return
            while True:
                payload = await self._read(reader)
                if payload is None:
                    return
                ack = await receive(_as_listener(self.ctx), _decode(payload), base=self.base)
                writer.write(frame(ack.text))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next framed message, or None when the peer closed the connection or broke
        the framing (more than the limit, or bytes outside a frame)."""
        start = await reader.read(1)
        while start in (b"\r", b"\n"):
            start = await reader.read(1)
        if start != START:
            return None
        reader_limit = self.settings.mllp_max_bytes
        payload = bytearray()
        while True:
            chunk = await reader.readuntil(b"\x1c")
            payload += chunk[:-1]
            if len(payload) > reader_limit:
                return None
            trailer = await reader.readexactly(1)
            if trailer == b"\r":
                return bytes(payload)
            payload += b"\x1c" + trailer


def _as_listener(ctx: FhirContext) -> FhirContext:
    from dataclasses import replace

    return replace(ctx, principal=TRUSTED)


@contextlib.asynccontextmanager
async def mllp_listener(
    ctx: FhirContext, settings: ExchangeSettings, *, base: str
) -> AsyncIterator[MllpListener | None]:
    """The listener while the block runs, when a port is configured (None otherwise)."""
    if settings.mllp_port is None:
        yield None
        return
    listener = MllpListener(ctx, settings, base=base)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()
