"""The sender's HTTP client (subscriptions/posting.py) against a real loopback socket whose
answers each test scripts: connections kept and reused, answers framed every way HTTP/1.x
allows, a kept connection the endpoint closed, and the failures an attempt records."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cmfhir.subscriptions.posting import Endpoints, PostError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
# An answer for each request read: (its number on its connection, its body) -> the bytes
# to write back, or None: close the connection without answering.
Answer = Callable[[int, bytes], bytes | None]


class Endpoint:
    """Reads requests (by Content-Length) and writes what `answer` says, per connection."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for nth in itertools.count():
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                out = self.answer(nth, body)
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def endpoint(answer: Answer) -> AsyncIterator[Endpoint]:
    found = Endpoint(answer)
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


async def test_sends_go_on_one_kept_connection_with_the_headers_given() -> None:
    async with endpoint(lambda nth, body: OK) as ep:
        client = Endpoints()
        url = f"http://127.0.0.1:{ep.port}/notify?x=1"
        escaped = await client.post(f"http://127.0.0.1:{ep.port}/ü b?q=ä", b"{}", {}, 5)
        codes = [
            await client.post(url, b'{"n":%d}' % n, {"Authorization": "Bearer t"}, 5)
            for n in range(3)
        ]
        await client.aclose()
    assert codes == [200, 200, 200] and escaped == 200
    assert ep.connections == client.opened == 1
    assert ep.requests[0][0].startswith(b"POST /%C3%BC%20b?q=%C3%A4 HTTP/1.1\r\n")
    head, body = ep.requests[3]
    assert head.startswith(b"POST /notify?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{ep.port}\r\n".encode() in head
    assert b"Authorization: Bearer t\r\n" in head
    assert body == b'{"n":2}'


CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n" + b"x" * 16
TRAILER = b"\r\n0\r\nT: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "code", "kept"),
    [
        (b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello", 201, True),
        (b"HTTP/1.1 200 OK\r\n" + CHUNKED + TRAILER, 200, True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, True),
        (b"HTTP/1.1 410 Gone\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 410, False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, False),
        # HTTP/1.0 keep-alive is not honoured (as h11 and httpx): a new connection each time.
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, False),
    ],
)
async def test_every_framing_of_an_answer_is_read_to_its_end(
    answer: bytes, code: int, kept: bool
) -> None:
    async with endpoint(lambda nth, body: answer) as ep:
        client = Endpoints()
        url = f"http://127.0.0.1:{ep.port}/"
        codes = [await client.post(url, b"{}", {}, 5) for _ in range(2)]
        await client.aclose()
    assert codes == [code, code]
    assert len(ep.requests) == 2
    assert client.opened == (1 if kept else 2)


async def test_a_body_up_to_the_close_ends_the_connection() -> None:
    async def close_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 202 Accepted\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(close_after, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Endpoints()
    try:
        assert await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5) == 202
        assert await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5) == 202
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert client.opened == 2


async def test_a_kept_connection_the_endpoint_closed_is_replaced_and_the_send_delivered() -> None:
    """The endpoint closes a kept connection as the next request arrives (its keep-alive
    time ran out): nothing was answered on it, so the send goes again on a new one."""
    async with endpoint(lambda nth, body: OK if nth == 0 else None) as ep:
        client = Endpoints()
        url = f"http://127.0.0.1:{ep.port}/"
        codes = [await client.post(url, b"%d" % n, {}, 5) for n in range(2)]
        await client.aclose()
    assert codes == [200, 200]
    assert [body for _, body in ep.requests] == [b"0", b"1", b"1"]
    assert ep.connections == client.opened == 2


async def test_failures_are_named_as_the_attempt_records_them() -> None:
    client = Endpoints()
    async with endpoint(lambda nth, body: None) as ep:
        closed = ep.port
        with pytest.raises(PostError) as dropped:
            await client.post(f"http://127.0.0.1:{ep.port}/", b"{}", {}, 5)
    with pytest.raises(PostError) as refused:
        await client.post(f"http://127.0.0.1:{closed}/", b"{}", {}, 5)
    gate = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await gate.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(PostError) as slow:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 0.2)
        with pytest.raises(PostError) as injected:
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {"X": "a\r\nB: c"}, 5)
    finally:
        gate.set()
        server.close()
        await server.wait_closed()
        await client.aclose()
    with pytest.raises(PostError) as unusable:
        await client.post("http://127.0.0.1:99999/", b"{}", {}, 5)
    endless = b"HTTP/1.1 200 OK\r\nX: " + b"x" * 200_000 + b"\r\n\r\n"
    async with endpoint(lambda nth, body: endless) as ep:
        with pytest.raises(PostError) as oversized:
            await client.post(f"http://127.0.0.1:{ep.port}/", b"{}", {}, 5)
        await client.aclose()
    assert oversized.value.name == "RemoteProtocolError"
    assert unusable.value.name == "UnsupportedProtocol"
    assert dropped.value.name == "RemoteProtocolError"
    assert refused.value.name == "ConnectError"
    assert slow.value.name == "ReadTimeout"
    assert injected.value.name == "LocalProtocolError"


async def test_connections_idle_too_long_are_closed_whatever_their_endpoint() -> None:
    async with endpoint(lambda nth, body: OK) as first, endpoint(lambda nth, body: OK) as second:
        client = Endpoints(idle_s=0.05)
        assert await client.post(f"http://127.0.0.1:{first.port}/", b"{}", {}, 5) == 200
        kept = client._origins[("http", "127.0.0.1", first.port)].idle
        assert len(kept) == 1
        await asyncio.sleep(0.1)
        # A send elsewhere closes the first endpoint's idle connection.
        assert await client.post(f"http://127.0.0.1:{second.port}/", b"{}", {}, 5) == 200
        assert client._origins[("http", "127.0.0.1", first.port)].idle == []
        await client.aclose()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_endpoints_must_show_a_trusted_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    ep = Endpoint(lambda nth, body: OK)
    server = await asyncio.start_server(ep.serve, "127.0.0.1", 0, ssl=context)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}/notify"
    try:
        untrusted = Endpoints()
        with pytest.raises(PostError) as refused:
            await untrusted.post(url, b"{}", {}, 5)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now trusted (as httpx reads it)
        trusted = Endpoints()
        codes = [await trusted.post(url, b"{}", {}, 5) for _ in range(2)]
        await trusted.aclose()
    finally:
        server.close()
        await server.wait_closed()
    assert refused.value.name == "ConnectError"
    assert codes == [200, 200]
    assert trusted.opened == 1
    assert [body for _, body in ep.requests] == [b"{}", b"{}"]
