"""CPU per read of the server's HTTP protocol and the application together, in one process
over real loopback TCP: uvicorn's server (with `cmfhir serve`'s protocol, or uvicorn's own)
and a minimal keep-alive client on the same event loop, every `GET Type/id` answered from
memory (`bench.read_stored`: no database round trip). The process's CPU time per read
(user and system apart) is the server's protocol, the event loop, the socket calls on both
ends and the read path; the client's share is small and the same for every server. One
process and no database make this far steadier on a loaded machine than wrk against a
server process (`bench.read_serving`); A against B by running it with each checkout's
`src/` on PYTHONPATH, alternately (`--rounds` inside one run).

    python -m bench.read_protocol_cost DIR [--reads 20000] [--connections 4]
        [--http guarded|httptools] [--log-level warning]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import resource
import statistics
from pathlib import Path
from typing import Any

from bench.probe import stored_ids
from bench.read_stored import reads_from_memory


class _Client(asyncio.Protocol):
    """Sends one GET, reads the answer to its end (by Content-Length), sends the next."""

    def __init__(self, requests: list[bytes], done: asyncio.Future[None], counter: list[int]):
        self.requests = requests
        self.done = done
        self.counter = counter
        self.buffer = b""
        self.next = 0
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if self.counter[0] <= 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.counter[0] -= 1
        self.transport.write(self.requests[self.next % len(self.requests)])
        self.next += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length: ")
        if at < 0:
            raise RuntimeError(f"no content-length: {head!r}")
        length = int(head[at + 16 : head.find(b"\r\n", at)])
        if len(self.buffer) < end + 4 + length:
            return
        if not self.buffer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(self.buffer[:200].decode("latin-1"))
        self.buffer = self.buffer[end + 4 + length :]
        self._send()


async def _round(port: int, requests: list[bytes], connections: int, reads: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counter = [reads]
    dones = [loop.create_future() for _ in range(connections)]
    before = resource.getrusage(resource.RUSAGE_SELF)
    transports = []
    for done in dones:
        transport, _ = await loop.create_connection(
            lambda done=done: _Client(requests, done, counter), "127.0.0.1", port
        )
        transports.append(transport)
    await asyncio.gather(*dones)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for transport in transports:
        transport.close()
    return {
        "user_us": round(1e6 * (after.ru_utime - before.ru_utime) / reads, 1),
        "sys_us": round(1e6 * (after.ru_stime - before.ru_stime) / reads, 1),
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn

    from cmfhir.app import create_app
    from cmfhir.config import Settings
    from cmfhir.logs import logging_config
    from cmfhir.store.database import embedded_url

    url = embedded_url(args.data_dir)
    ids = await stored_ids(url)
    paths = [f"/fhir/Patient/{i}" for i in ids["Patient"][:500]]
    paths += [f"/fhir/Encounter/{i}" for i in ids["Encounter"][:500]]
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/fhir+json\r\n\r\n".encode()
        for p in paths
    ]
    os.environ.update(
        CMFHIR_DATABASE_URL=url,
        CMFHIR_AUTH="off",
        CMFHIR_AUDIT="false",
        CMFHIR_WORKERS="false",
        CMFHIR_LOG_LEVEL=args.log_level,
        CMFHIR_DATA_DIR=str(args.data_dir / "protocol-cost"),
    )
    settings = Settings()
    log_config = logging_config(settings.log_level, settings.log_format)
    log_config["handlers"]["stderr"]["stream"] = "ext://sys.stderr"
    logging.config.dictConfig(log_config)
    reads_from_memory()
    http = "cmfhir.connections:GuardedHttpProtocol" if args.http == "guarded" else "httptools"
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=args.port,
        http=http,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=settings.keep_alive_timeout_s,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn's Server has no event for it)
        await asyncio.sleep(0.05)
    try:
        await _round(args.port, requests, args.connections, 2000)  # every path read once
        rows = [
            await _round(args.port, requests, args.connections, args.reads)
            for _ in range(args.rounds)
        ]
    finally:
        server.should_exit = True
        await serving
    return {
        "rows": rows,
        "median_user_us": statistics.median(r["user_us"] for r in rows),
        "median_sys_us": statistics.median(r["sys_us"] for r in rows),
        "median_us": statistics.median(r["user_us"] + r["sys_us"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.read_protocol_cost")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--http", choices=("guarded", "httptools"), default="guarded")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--port", type=int, default=18777)
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    import uvloop

    result = uvloop.run(_run(args))
    result["load"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
