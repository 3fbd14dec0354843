"""The websocket endpoint of websocket-channel Subscriptions (subscriptions/websocket.py):
bind with a token from `$get-ws-binding-token`, then receive the handshake, notifications
and heartbeats as JSON text messages."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from cmfhir.errors import FhirError
from cmfhir.resources.fhirjson import dump_json
from cmfhir.subscriptions.websocket import WebSocketChannel

__all__ = ["ws_router"]

ws_router = APIRouter()

POLL_S = 0.1


@ws_router.websocket("/ws/subscriptions")
async def subscription_websocket(websocket: WebSocket) -> None:
    await websocket.accept()
    feature = websocket.app.state.fhir.subscriptions
    channel = WebSocketChannel(websocket.app.state.fhir, feature)
    try:
        message = await asyncio.wait_for(websocket.receive_text(), timeout=30)
        binding = await channel.bind(message)
    except (FhirError, TimeoutError) as error:
        text = error.diagnostics if isinstance(error, FhirError) else "No binding in time"
        with contextlib.suppress(Exception):
            await websocket.send_text(text)
            await websocket.close(code=1008)
        return
    except WebSocketDisconnect:
        return
    closed = asyncio.Event()

    async def watch() -> None:
        # The client sends nothing more that matters; its going away ends the session.
        try:
            while True:
                await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            closed.set()

    watcher = asyncio.create_task(watch())
    try:
        await websocket.send_text(dump_json(await channel.handshake(binding)).decode())
        last_sent = time.monotonic()
        while not closed.is_set():
            bundle = await channel.next_notification(binding)
            if bundle is not None:
                await websocket.send_text(dump_json(bundle).decode())
                await channel.sent(binding)
                last_sent = time.monotonic()
                continue
            if time.monotonic() - last_sent >= binding.heartbeat_s:
                await websocket.send_text(dump_json(await channel.heartbeat(binding)).decode())
                last_sent = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), POLL_S)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
