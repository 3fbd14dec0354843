"""The built-in apps as the server serves them (routes/apps.py): files with their types and
cache rules, the page for client-side routes, the Content-Security-Policy, the start page;
and their SMART clients, registered at start for the configured origin."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from cmfhir.config import Settings
from cmfhir.interactions.builtin_apps import app_origins
from cmfhir.routes.apps import APPS_DIR


@pytest.fixture(scope="module")
def origin(base: str) -> str:
    return base.rsplit("/fhir", 1)[0]


def test_start_page_says_what_this_is_and_links_the_apps(origin: str) -> None:
    page = httpx.get(f"{origin}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text and "care-management" in page.text
    for link in ('href="/apps/member/"', 'href="/fhir/metadata"', 'href="/docs/"'):
        assert link in page.text
    assert "<script" not in page.text
    docs = httpx.get(f"{origin}/docs/security.md")
    assert docs.status_code == 200 and docs.text.startswith("# Security")
    assert httpx.get(f"{origin}/docs/..%2Fpyproject.toml").status_code == 404


def test_app_page_assets_and_client_side_routes(origin: str) -> None:
    page = httpx.get(f"{origin}/apps/member/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    script = re.search(r'src="(/apps/member/assets/[^"]+\.js)"', page.text)
    style = re.search(r'href="(/apps/member/assets/[^"]+\.css)"', page.text)
    assert script and style
    js = httpx.get(origin + script[1])
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert httpx.get(origin + style[1]).headers["content-type"] == "text/css; charset=utf-8"
    # A client-side route gets the page; a missing file does not.
    route = httpx.get(f"{origin}/apps/member/goals/edit")
    assert route.status_code == 200 and route.text == page.text
    assert httpx.get(f"{origin}/apps/member/assets/gone-1234.js").status_code == 404
    assert httpx.get(f"{origin}/apps/member/missing.png").status_code == 404
    redirect = httpx.get(f"{origin}/apps/member")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/apps/member/"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/apps/member/..%2F..%2Fapp.py", id="encoded-dots"),
        pytest.param("/apps/member/%2e%2e/%2e%2e/app.py", id="dot-segments"),
        pytest.param("/apps/nope/", id="unknown-app"),
        pytest.param("/apps/..%2Froutes/", id="app-name"),
    ],
)
def test_nothing_outside_an_app_is_served(origin: str, path: str) -> None:
    answer = httpx.get(origin + path)
    assert answer.status_code in (404, 200)
    assert "def create_app" not in answer.text
    if path.startswith("/apps/nope") or "routes" in path:
        assert answer.status_code == 404


def test_app_origins_come_from_the_settings() -> None:
    assert app_origins("", None) == ()
    assert app_origins("", "https://care.example/fhir") == ("https://care.example",)
    assert app_origins("http://127.0.0.1:8080, http://localhost:8080", "https://x/fhir") == (
        "http://127.0.0.1:8080",
        "http://localhost:8080",
    )
    assert app_origins("not a url", "https://care.example:8443/fhir") == (
        "https://care.example:8443",
    )


def _authorize(origin: str, client_id: str, redirect: str, scope: str) -> httpx.Response:
    return httpx.get(
        f"{origin}/auth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": scope,
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        },
    )


def test_apps_clients_are_registered_at_start(
    database_url: str, tmp_path: Path, start_server: Any
) -> None:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        auth="smart",
        apps_origins="https://care.example",
        audit=False,
    )
    with start_server(settings) as running:
        origin = running.base.rsplit("/fhir", 1)[0]
        member = _authorize(
            origin,
            "cmfhir-member",
            "https://care.example/apps/member/",
            "openid fhirUser launch/patient patient/*.cruds",
        )
        assert member.status_code == 200 and 'name="password"' in member.text
        team = _authorize(
            origin, "cmfhir-care-team", "https://care.example/apps/care-team/", "user/*.cruds"
        )
        assert team.status_code == 200
        elsewhere = _authorize(
            origin, "cmfhir-member", "https://evil.example/apps/member/", "patient/*.rs"
        )
        assert elsewhere.status_code == 400
        assert "redirect_uri is not registered" in elsewhere.text


def test_the_member_app_is_built() -> None:
    assert (APPS_DIR / "member" / "index.html").is_file()
