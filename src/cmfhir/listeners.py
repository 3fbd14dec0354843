"""One listening socket per server worker, all bound to the same port with `SO_REUSEPORT`.

uvicorn's workers share one listening socket, and whichever worker is awake first accepts:
a client that opens its keep-alive connections at once often lands all of them on one
worker while the other idles (bench/README.md). With a socket of its own per worker in one
`SO_REUSEPORT` group, the kernel hashes each new connection to one of the sockets, so the
connections spread over the workers. Only one user's processes can join a group, and only
sockets that all set the option; so that a second server on the same port fails as before
instead of joining the group, the port is first bound once without the option.
"""

from __future__ import annotations

import logging
import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import Multiprocess

__all__ = ["ReusePortMultiprocess", "check_port_free", "reuse_port_socket", "reuse_port_supported"]

logger = logging.getLogger("uvicorn.error")


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if anything listens on `host:port`, an `SO_REUSEPORT` group included
    (a socket without the option cannot join one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` in the port's `SO_REUSEPORT` group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class ReusePortMultiprocess(Multiprocess):
    """uvicorn's supervisor, each worker it starts (at start, on restart, on SIGHUP or
    SIGTTIN) given a new socket of the group instead of a shared one.

    The supervisor reads `sockets` once per worker it starts, so reading it binds the next
    socket. A worker receives its socket when it starts (spawn passes the descriptor), after
    which the supervisor closes its own copy: the socket then lives as long as its worker,
    and the kernel stops sending connections to it when the worker is gone.
    """

    def __init__(self, config: Config) -> None:
        self._host = config.host
        # A port of 0 takes the one the first socket got, for every worker.
        self._port = config.port
        self._handed: list[socket.socket] = []
        try:
            if self._port:
                check_port_free(self._host, self._port)
        except OSError as error:
            logger.error(error)
            sys.exit(STARTUP_FAILURE)
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        self._close_handed()
        sock = reuse_port_socket(self._host, self._port)
        self._port = sock.getsockname()[1]
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        """uvicorn's constructor stores the shared sockets it was given: there are none."""

    def _close_handed(self) -> None:
        """Close the supervisor's copies of the sockets handed out so far: uvicorn starts
        each worker right after making it, on every path, so each has its socket by now."""
        for sock in self._handed:
            sock.close()
        self._handed = []

    def init_processes(self) -> None:
        super().init_processes()
        self._close_handed()

    def keep_subprocess_alive(self) -> None:
        self._close_handed()
        super().keep_subprocess_alive()
        self._close_handed()

    def handle_ttin(self) -> None:
        super().handle_ttin()
        self._close_handed()

    def restart_all(self) -> None:
        super().restart_all()
        self._close_handed()
