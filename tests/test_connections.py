"""Connections as `cmfhir serve` handles them over real sockets: silent ones and ones that
trickle their headers are closed after CMFHIR_HEADER_TIMEOUT_S, at most
CMFHIR_MAX_CONNECTIONS stay open, a client that leaves mid-upload is no server error, and a
small answer arrives in one piece (its head and body in one send)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from serving import Served, serve


@pytest.fixture(scope="module")
def served_with(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Served]]:
    """Two servers: a 1-second request-head timeout, and a cap of 40 connections with a
    long timeout (so only the cap can close connections)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CMFHIR_HEADER_TIMEOUT_S", "1")
        with serve(database_url, tmp_path_factory.mktemp("timeout")) as short:
            env.setenv("CMFHIR_HEADER_TIMEOUT_S", "60")
            env.setenv("CMFHIR_MAX_CONNECTIONS", "40")
            with serve(database_url, tmp_path_factory.mktemp("capped")) as capped:
                yield {"short": short, "capped": capped}


def _connect(base: str) -> socket.socket:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed it (without waiting; what it sent is read and dropped)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)


def _wait_closed(socks: list[socket.socket], seconds: float) -> float:
    started = time.monotonic()
    while not all(_closed(s) for s in socks):
        if time.monotonic() - started > seconds:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _answers(base: str) -> None:
    started = time.monotonic()
    response = httpx.get(f"{base}/metadata", timeout=10)
    assert response.status_code == 200
    assert time.monotonic() - started < 5


def test_silent_connections_are_closed_after_the_header_timeout(
    served_with: dict[str, Served],
) -> None:
    base = served_with["short"].base
    socks = [_connect(base) for _ in range(50)]
    try:
        _answers(base)  # meanwhile others are served
        waited = _wait_closed(socks, 10)
        assert all(_closed(s) for s in socks)
        assert 0.5 < waited < 5
    finally:
        for s in socks:
            s.close()


def test_trickled_headers_are_cut_off(served_with: dict[str, Served]) -> None:
    """Each header line arrives in time for an idle timeout, but the head never ends."""
    base = served_with["short"].base
    with _connect(base) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed_after = None
        for i in range(40):
            time.sleep(0.2)
            if _closed(sock):
                closed_after = time.monotonic() - started
                break
            try:
                sock.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            except ConnectionError:
                closed_after = time.monotonic() - started
                break
            if i == 2:
                _answers(base)
        assert closed_after is not None and closed_after < 3


def test_a_connection_between_requests_gets_the_same_timeout(
    served_with: dict[str, Served],
) -> None:
    base = served_with["short"].base
    with _connect(base) as sock:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
        # Half of the next request head, then nothing.
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\n")
        assert _wait_closed([sock], 5) < 5


def test_a_body_that_stops_arriving_is_given_up_on(served_with: dict[str, Served]) -> None:
    served = served_with["short"]
    with _connect(served.base) as sock:
        sock.sendall(
            b"PUT /fhir/Patient/stalled HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n"
            b'{"resourceType":"Patient",'
        )
        assert _wait_closed([sock], 5) < 5
    _answers(served.base)
    assert httpx.get(f"{served.base}/Patient/stalled", timeout=10).status_code == 404


def test_silent_connections_past_the_cap_do_not_lock_clients_out(
    served_with: dict[str, Served],
) -> None:
    base = served_with["capped"].base
    socks = [_connect(base) for _ in range(300)]
    try:
        for _ in range(5):
            _answers(base)
        time.sleep(0.5)
        still_open = sum(not _closed(s) for s in socks)
        assert still_open <= 40
    finally:
        for s in socks:
            s.close()


def test_client_leaving_mid_upload_is_not_a_server_error(
    served_with: dict[str, Served],
) -> None:
    served = served_with["short"]
    for _ in range(3):
        with _connect(served.base) as sock:
            sock.sendall(
                b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/fhir+json\r\nContent-Length: 100000\r\n\r\n"
                + b'{"resourceType":"Patient","name":[{"family":"'
                + b"x" * 50_000
            )
            time.sleep(0.2)
    time.sleep(0.5)
    _answers(served.base)
    log = served.output()
    assert "ERROR" not in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]


def _answer_on(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send `request`; the first piece the socket gives back, and the whole answer (its
    body read to its Content-Length; a HEAD answer's head alone)."""
    sock.sendall(request)
    first = sock.recv(65536)
    answer = first
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    if request.startswith(b"HEAD"):
        return first, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return first, head + b"\r\n\r\n" + body


def test_a_small_answer_arrives_in_one_piece(served_with: dict[str, Served]) -> None:
    """The head of a response of known length leaves with its body: the client's first
    read has all of it (sent apart, the first read would often hold the head alone)."""
    with _connect(served_with["short"].base) as sock:
        for _ in range(5):
            first, whole = _answer_on(
                sock, b"GET /fhir/Patient/no-such-member HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert whole.startswith(b"HTTP/1.1 404")
            assert first == whole


def test_answers_without_a_body_are_not_held_back(served_with: dict[str, Served]) -> None:
    """A HEAD answer has a Content-Length and no body: it is sent at once, and the
    connection serves the next request."""
    with _connect(served_with["short"].base) as sock:
        _, head = _answer_on(sock, b"HEAD /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 ")
        assert head.endswith(b"\r\n\r\n")
        assert b"content-length:" in head.lower()
        _, whole = _answer_on(sock, b"GET /fhir/Patient/nobody HTTP/1.1\r\nHost: x\r\n\r\n")
        assert whole.startswith(b"HTTP/1.1 404")


def test_settings_are_documented() -> None:
    text = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for name in ("HEADER_TIMEOUT_S", "KEEP_ALIVE_TIMEOUT_S", "MAX_CONNECTIONS"):
        assert f"CMFHIR_{name}" in text
