"""`cmfhir serve --workers N`: each worker listens on a socket of its own in one SO_REUSEPORT
group, so keep-alive connections opened at once spread over the workers instead of all
landing on whichever worker woke first."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from cmfhir.listeners import check_port_free, reuse_port_socket
from serving import serve

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT"), reason="the platform has no SO_REUSEPORT"
)

CONNECTIONS = 32


def _established_per_worker(parent: psutil.Process, port: int) -> dict[int, int]:
    """Connections to `port` each worker holds (the supervisor holds none)."""
    counts: dict[int, int] = {}
    for worker in parent.children(recursive=True):
        # multiprocessing's resource tracker is a child of the supervisor too.
        if "postgres" in worker.name() or "resource_tracker" in " ".join(worker.cmdline()):
            continue
        held = [
            c
            for c in worker.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        ]
        counts[worker.pid] = len(held)
    return counts


def _listening(process: psutil.Process, port: int) -> list[int]:
    return [
        c.fd
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]


def test_keep_alive_connections_reach_both_workers(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, tmp_path, "--workers", "2") as served:
        port = urlsplit(served.base).port or 0
        parent = psutil.Process(served.process.pid)
        clients = [httpx.Client(base_url=served.base, timeout=30) for _ in range(CONNECTIONS)]
        try:
            # Every client opens its connection and keeps it for the next request.
            for client in clients:
                assert client.get("metadata").status_code == 200
            counts = _established_per_worker(parent, port)
            # Each worker listens on its own socket; the supervisor has closed its copies.
            workers = [p for p in parent.children(recursive=True) if p.pid in counts]
            assert all(_listening(w, port) for w in workers), counts
            assert not _listening(parent, port)
        finally:
            for client in clients:
                client.close()
        assert len(counts) == 2, counts
        # The kernel hashes each connection to a socket: all 32 on one worker is a chance
        # of 2 in 2**32; sharing one socket, one worker took them all in most runs.
        assert all(held > 0 for held in counts.values()), counts
        assert sum(counts.values()) == CONNECTIONS, counts
        code, _ = served.stop(signal.SIGTERM)
        assert code == 0, served.output()


def test_a_port_held_without_reuse_port_is_refused() -> None:
    """The group does not admit a socket bound without the option: two servers on one port
    still fail as before instead of sharing the connections."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(OSError):
            reuse_port_socket("127.0.0.1", port)


def test_sockets_of_one_group_share_the_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = reuse_port_socket("127.0.0.1", port)
        second.close()
    finally:
        first.close()


def test_a_port_an_earlier_group_listens_on_is_not_free() -> None:
    """A second `cmfhir serve` on the port of a running one fails to start rather than
    joining its group."""
    first = reuse_port_socket("127.0.0.1", 0)
    try:
        first.listen()
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            check_port_free("127.0.0.1", port)
    finally:
        first.close()
    check_port_free("127.0.0.1", port)
