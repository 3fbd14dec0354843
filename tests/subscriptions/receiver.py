"""A rest-hook subscriber on a loopback socket: records every notification it is sent, and can
go down (its port closed) and come back on the same port."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.serving import free_port


class Receiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.delay_s = delay_s
        # While set, requests are read but not answered (`hold()`, `release()`).
        self._held = threading.Event()
        self._released = threading.Event()
        self.arrivals = 0  # requests read, answered or not
        self.bundles: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with receiver._lock:
                    receiver.arrivals += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver._held.is_set():
                    receiver._released.wait(60)
                    return  # no answer: the sender gave up on this one
                with receiver._lock:
                    receiver.bundles.append(body)
                    receiver.headers.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def hold(self) -> None:
        """Read requests from now on but leave them unanswered, until `release()`."""
        self._released.clear()
        self._held.set()

    def release(self) -> None:
        """Answer again (the requests held are dropped unanswered)."""
        self._held.clear()
        self._released.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def statuses(self) -> list[dict[str, Any]]:
        """The subscription status (first entry) of each Bundle received, as name -> value."""
        with self._lock:
            return [status_of(b) for b in self.bundles]

    def event_numbers(self) -> list[int]:
        return [n for s in self.statuses() for n in s["events"]]

    def wait_for(self, count: int, timeout_s: float = 30) -> list[int]:
        """Event numbers received, once at least `count` distinct ones have come."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(set(self.event_numbers())) >= count:
                return self.event_numbers()
            time.sleep(0.05)
        raise AssertionError(f"received {self.event_numbers()}, expected {count} events")


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    out: dict[str, Any] = {"events": [], "foci": []}
    for p in parameters["parameter"]:
        if p["name"] == "notification-event":
            parts = {part["name"]: part for part in p["part"]}
            out["events"].append(int(parts["event-number"]["valueString"]))
            if "focus" in parts:
                out["foci"].append(parts["focus"]["valueReference"]["reference"])
        else:
            value = next(v for k, v in p.items() if k.startswith("value"))
            out[p["name"]] = value
    return out
