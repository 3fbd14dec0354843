"""The built-in SMART web apps, served as static files from `cmfhir/static/apps/<name>/` at
`/apps/<name>/` (docs/apps.md), and the start page at `GET /` that links to them."""

from __future__ import annotations

import html
import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmfhir import __version__

__all__ = ["APPS_DIR", "CONTENT_SECURITY_POLICY", "apps_router"]

APPS_DIR = Path(__file__).resolve().parents[1] / "static" / "apps"
# docs/ beside src/ in a checkout (as profiles/ is); absent from an installed wheel.
DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"

# The apps load only their own files and talk only to this origin (the FHIR API and /auth);
# fhirclient's redirects to /auth/authorize are navigations, which this does not restrict.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Vite names every built asset by its content hash: the name changes when the file does.
_IMMUTABLE = "public, max-age=31536000, immutable"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}

apps_router = APIRouter(include_in_schema=False)


def installed_apps() -> list[str]:
    """The apps whose built files are present (a directory with an index.html)."""
    if not APPS_DIR.is_dir():
        return []
    return sorted(p.name for p in APPS_DIR.iterdir() if (p / "index.html").is_file())


def _app_root(name: str) -> Path:
    root = APPS_DIR / name
    if not _NAME.match(name) or not (root / "index.html").is_file():
        raise StarletteHTTPException(404, f"No app {name!r} is installed")
    return root


def _index(root: Path) -> Response:
    return FileResponse(
        root / "index.html",
        media_type=_TYPES[".html"],
        headers={**_SECURITY, "Cache-Control": "no-cache"},
    )


@apps_router.api_route("/apps/{name}", methods=["GET", "HEAD"])
async def app_without_slash(name: str) -> Response:
    _app_root(name)
    return RedirectResponse(f"/apps/{name}/", status_code=308)


@apps_router.api_route("/apps/{name}/{path:path}", methods=["GET", "HEAD"])
async def app_file(name: str, path: str) -> Response:
    """A built file, or the app's index.html for its own (client-side) routes."""
    root = _app_root(name)
    if not path or path == "index.html":
        return _index(root)
    candidate = (root / path).resolve()
    if candidate.is_relative_to(root.resolve()) and candidate.is_file():
        immutable = path.startswith("assets/")
        return FileResponse(
            candidate,
            media_type=_TYPES.get(candidate.suffix.lower(), "application/octet-stream"),
            headers={**_SECURITY, "Cache-Control": _IMMUTABLE if immutable else "no-cache"},
        )
    # A missing file (a name with an extension, or under assets/) is a 404, not the page:
    # a stale cached page asking for an old asset must fail visibly.
    if path.startswith("assets/") or "." in path.rsplit("/", 1)[-1]:
        raise StarletteHTTPException(404, "No such file")
    return _index(root)


_TITLES = {
    "care-team": ("Care-team console", "for care managers, supervisors and peer supporters"),
    "member": ("Member app", "for members and their families: my care plan, goals and record"),
}


@apps_router.get("/")
async def start_page(request: Request) -> HTMLResponse:
    """What this server is, and where to go from here."""
    apps = "".join(
        f'<li><a href="/apps/{html.escape(name)}/">{html.escape(_TITLES.get(name, (name, ""))[0])}'
        f"</a> {html.escape(_TITLES.get(name, ('', ''))[1])}</li>"
        for name in installed_apps()
    )
    docs = (
        '<li><a href="/docs/">Documentation</a> (the Markdown files of docs/)</li>\n'
        if DOCS_DIR.is_dir()
        else ""
    )
    apps_block = f"<h2>Apps</h2>\n<ul>{apps}</ul>" if apps else ""
    body = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cmfhir</title></head>
<body><main>
<h1>cmfhir</h1>
<p>cmfhir is an open-source care-management data system: a FHIR server (R4) that a care
management agency or practice runs so its care managers know who they serve, what has changed
for each member and what is overdue, and so members can see their own record.</p>
{apps_block}
<h2>For developers</h2>
<ul>
<li><a href="/fhir/metadata">FHIR CapabilityStatement</a> (<code>/fhir/metadata</code>)</li>
<li><a href="/fhir/.well-known/smart-configuration">SMART configuration</a></li>
{docs}</ul>
<p><small>cmfhir {html.escape(__version__)}</small></p>
</main></body></html>"""
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
        },
    )


def _doc_names() -> list[str]:
    return sorted(p.name for p in DOCS_DIR.glob("*.md")) if DOCS_DIR.is_dir() else []


@apps_router.get("/docs/")
async def docs_index() -> HTMLResponse:
    items = "".join(
        f'<li><a href="/docs/{html.escape(name)}">{html.escape(name)}</a></li>'
        for name in _doc_names()
    )
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Documentation - cmfhir</title></head>
<body><main><h1>Documentation</h1><ul>{items}</ul>
<p><a href="/">Back to the start page</a></p></main></body></html>""",
        headers={"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-cache"},
    )


@apps_router.get("/docs/{name}")
async def doc_file(name: str) -> Response:
    """One document, as the Markdown it is written in."""
    if name not in _doc_names():
        raise StarletteHTTPException(404, "No such document")
    return FileResponse(
        DOCS_DIR / name,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-cache"},
    )
