"""Checks the hardening tests share: what a refusal looks like, counting what is stored,
and sending bytes an HTTP client library would not."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

FHIR = {"Content-Type": "application/fhir+json"}


def assert_outcome(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A refusal: one of `statuses` (any 4xx if none given), as a FHIR OperationOutcome."""
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["diagnostics"]
    return outcome


def count(client: httpx.Client, path: str = "") -> int:
    """How many resources a search finds (`""`: all types), by `_summary=count`."""
    response = client.get(path, params={"_summary": "count"})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def raw_request(base: str, request: bytes, *, timeout: float = 30) -> tuple[int, bytes]:
    """Send bytes httpx would refuse to send (a 100 KB URL, an unknown method) and return
    the status and body of the answer."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]
