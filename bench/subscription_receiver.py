"""The rest-hook subscriber of `bench.subscriptions`, in a process of its own (as a real
subscriber is: its CPU is not the harness's ingest client's):
`python -m bench.subscription_receiver PORT`.

Answers every POST to /notify with 200 and records, per focus (`Encounter/id`), the wall
time (`time.time()`) its first notification arrived and the event's timestamp (when the
change was written, by the server's clock); GET /arrivals gives them with the count
of notification events and handshakes received, GET /count the counts alone."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import orjson
from aiohttp import web


class Subscriber:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        # Each focus's event timestamp (its writing transaction's time, by the server).
        self.occurred: dict[str, float] = {}
        self.notifications = 0
        self.handshakes = 0

    async def receive(self, request: web.Request) -> web.Response:
        wall = time.time()
        bundle = orjson.loads(await request.read())
        status = bundle["entry"][0]["resource"]
        kind = next(p["valueCode"] for p in status["parameter"] if p["name"] == "type")
        if kind == "handshake":
            self.handshakes += 1
        for parameter in status["parameter"]:
            if parameter["name"] != "notification-event":
                continue
            self.notifications += 1
            parts = {part["name"]: part for part in parameter["part"]}
            if "focus" in parts:
                focus = parts["focus"]["valueReference"]["reference"]
                self.arrived.setdefault(focus, wall)
                stamp = datetime.fromisoformat(parts["timestamp"]["valueInstant"])
                self.occurred.setdefault(focus, stamp.timestamp())
        return web.Response(status=200)

    async def arrivals(self, request: web.Request) -> web.Response:
        body = {
            "arrived": self.arrived,
            "occurred": self.occurred,
            "notifications": self.notifications,
            "handshakes": self.handshakes,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def count(self, request: web.Request) -> web.Response:
        body = {
            "foci": len(self.arrived),
            "notifications": self.notifications,
            "handshakes": self.handshakes,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    subscriber = Subscriber()
    app = web.Application()
    app.router.add_post("/notify", subscriber.receive)
    app.router.add_get("/arrivals", subscriber.arrivals)
    app.router.add_get("/count", subscriber.count)
    web.run_app(app, host="127.0.0.1", port=int(args[0]), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
