"""The SMART clients of the apps cmfhir ships (`/apps/care-team/`, `/apps/member/`): public
clients with PKCE, registered (or brought up to date) at every start, with the redirect URI
of each origin the apps are reached at (docs/apps.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cmfhir.store import OAuthStore
from cmfhir.store.oauth import Client

__all__ = ["BUILTIN_APPS", "BuiltinApp", "app_origins", "register_builtin_apps"]


@dataclass(frozen=True, slots=True)
class BuiltinApp:
    name: str  # served at /apps/<name>/
    client_id: str
    scope: str

    def redirect_uri(self, origin: str) -> str:
        return f"{origin}/apps/{self.name}/"


BUILTIN_APPS = (
    BuiltinApp(
        "care-team",
        "cmfhir-care-team",
        "openid fhirUser launch/patient offline_access user/*.cruds",
    ),
    BuiltinApp(
        "member",
        "cmfhir-member",
        "openid fhirUser launch/patient offline_access patient/*.cruds",
    ),
)


def _origin(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def app_origins(apps_origins: str, base_url: str | None) -> tuple[str, ...]:
    """The origins whose `/apps/<name>/` are registered redirect URIs: CMFHIR_APPS_ORIGINS
    (comma-separated) if set, else the origin of CMFHIR_BASE_URL, else none."""
    listed = [o for o in (_origin(u) for u in apps_origins.split(",") if u.strip()) if o]
    if listed:
        return tuple(dict.fromkeys(listed))
    if base_url:
        origin = _origin(base_url)
        return (origin,) if origin else ()
    return ()


async def register_builtin_apps(store: OAuthStore, origins: Sequence[str]) -> None:
    """Register each app's client with the redirect URIs of `origins` (replacing those of an
    earlier start: the registration follows the configuration). With no origin known,
    nothing is registered (the caller says so)."""
    if not origins:
        return
    for app in BUILTIN_APPS:
        uris = tuple(app.redirect_uri(origin) for origin in origins)
        await store.save_client(Client(app.client_id, True, uris, None, app.scope))
