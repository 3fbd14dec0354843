"""Cross-origin requests from browser apps (SMART apps served from another origin): which
origins may call the API, what they may send and which response headers they may read
(https://fetch.spec.whatwg.org/#http-cors-protocol)."""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "CORSMiddleware", "cors_options", "parse_origins"]

ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Exist",
    "If-None-Match",
    "If-Modified-Since",
    "Prefer",
    "X-Request-Id",
)
# What a FHIR client reads after a write or a conditional read.
EXPOSED_HEADERS = ("Location", "ETag", "Content-Location", "Last-Modified", "X-Request-Id")


def parse_origins(setting: str) -> list[str]:
    """`https://a.example, https://b.example` → both; `*` → any origin; empty → none."""
    return [origin.strip().rstrip("/") for origin in setting.split(",") if origin.strip()]


def cors_options(origins: list[str]) -> dict[str, Any]:
    """Keyword arguments of Starlette's `CORSMiddleware` for `origins`. Credentials (cookies)
    are not allowed: SMART apps send their token in `Authorization`."""
    return {
        "allow_origins": origins,
        "allow_methods": ALLOWED_METHODS,
        "allow_headers": ALLOWED_HEADERS,
        "expose_headers": EXPOSED_HEADERS,
        "allow_credentials": False,
        "max_age": 600,
    }
