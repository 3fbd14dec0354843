"""The built-in SMART web apps, served as static files from `cmfhir/static/apps/<name>/` at
`/apps/<name>/` (a path that is not a file answers the app's index.html)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["apps_router"]

APPS_DIR = Path(__file__).resolve().parents[1] / "static" / "apps"

apps_router = APIRouter(include_in_schema=False)


@apps_router.get("/apps/{name}")
async def app_root(name: str) -> Response:
    return RedirectResponse(f"/apps/{name}/", status_code=308)


@apps_router.get("/apps/{name}/{path:path}")
async def app_file(name: str, path: str) -> Response:
    root = (APPS_DIR / name).resolve()
    if root.parent != APPS_DIR.resolve() or not (root / "index.html").is_file():
        raise StarletteHTTPException(404)
    target = (root / path).resolve() if path else root / "index.html"
    if not target.is_relative_to(root) or not target.is_file():
        target = root / "index.html"
    return FileResponse(target, headers={"Cache-Control": "no-cache"})
