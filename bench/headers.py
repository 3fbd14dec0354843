"""Request headers of the harness's own httpx clients.

httpx (like requests, aiohttp and fhirpy) sends `Accept-Encoding: gzip, deflate` unless told
otherwise, and cmfhir gzips answers over 8 KiB for such clients — a member's transaction
response (the created resources, tens of KiB) among them. wrk sends no Accept-Encoding, so
by default every harness client asks for `identity`: ingest, read and search then measure
the same uncompressed work as wrk and as the runs made before the server compressed.
`--gzip` sends what a default httpx client sends instead, to measure that cost."""

from __future__ import annotations

__all__ = ["FHIR_JSON", "client_headers"]

FHIR_JSON = "application/fhir+json"


def client_headers(*, gzip: bool = False, body: bool = False) -> dict[str, str]:
    """Accept (and Content-Type for a request with a body) plus the chosen Accept-Encoding."""
    headers = {"Accept": FHIR_JSON, "Accept-Encoding": "gzip, deflate" if gzip else "identity"}
    if body:
        headers["Content-Type"] = FHIR_JSON
    return headers
