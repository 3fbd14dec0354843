"""Settings, read once from `CMFHIR_*` environment variables in `app.py` and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["AUTH_MODES", "Settings", "check_auth_binding", "default_profiles_dir"]

AUTH_MODES = ("smart", "off")


def default_profiles_dir() -> Path:
    """`profiles/` beside `src/` in a checkout or an image built from one."""
    return Path(__file__).resolve().parents[2] / "profiles"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMFHIR_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user:pass@host/db). Unset: the embedded "
        "PostgreSQL from the pgserver wheel, kept in data_dir.",
    )
    data_dir: Path = Field(
        default=Path(".data"), description="Where the embedded PostgreSQL lives."
    )
    base_url: str | None = Field(
        default=None,
        description="Public base URL of the FHIR API (https://host/fhir). Unset: taken from "
        "each request, so links point where the client connected.",
    )
    apps_origins: str = Field(
        default="",
        description="Comma-separated origins (https://host:port) the built-in apps are "
        "reached at: their SMART redirect URIs (docs/apps.md). Unset: base_url's origin; "
        "`cmfhir serve` on a loopback address sets it to that address and localhost.",
    )
    # Authorization (docs/security.md).
    auth: str = Field(
        default="smart",
        description="'smart': SMART on FHIR bearer tokens required (the default); 'off': no "
        "authorization at all (local exploration and test suites only).",
    )
    auth_off_i_understand: bool = Field(
        default=False,
        description="Allow CMFHIR_AUTH=off on an address other than loopback.",
    )
    auth_issuer: str | None = Field(
        default=None,
        description="Trust tokens of this external OpenID Connect issuer (its JWKS from "
        "its discovery document) instead of the built-in authorization server.",
    )
    auth_jwks_url: str | None = Field(
        default=None,
        description="The external issuer's JWKS URL, if not the one its discovery names.",
    )
    auth_audience: str | None = Field(
        default=None,
        description="The audience tokens must name. Unset: the base URL (base_url, or the "
        "URL the request came to).",
    )
    access_token_lifetime_s: int = Field(default=3600, description="Access token lifetime.")
    refresh_token_lifetime_s: int = Field(
        default=30 * 24 * 3600, description="Refresh token lifetime (offline_access)."
    )
    login_attempts: int = Field(
        default=5, description="Failed logins per account, and per address, per window."
    )
    login_window_s: int = Field(default=900, description="The failed-login window (seconds).")
    audit: bool = Field(
        default=True, description="Record an AuditEvent for each access to a member's data."
    )
    audit_interval_s: float = Field(
        default=0.03,
        description="Seconds between writes of the buffered AuditEvents (reads, logins, "
        "refused requests; sooner once 1,000 wait): what a crash of the process can lose; a "
        "write's AuditEvents commit with it (docs/security.md).",
    )
    profiles_dir: Path = Field(default_factory=default_profiles_dir)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, description="Largest request body.")
    max_bundle_entries: int = Field(default=20_000, description="Most entries in one Bundle.")
    default_count: int = Field(default=20, description="Page size when _count is absent.")
    max_count: int = Field(default=1000, description="Largest page size a client may ask for.")
    max_included: int = Field(default=1000, description="Most _include'd resources per page.")
    max_include_depth: int = Field(default=4, description="Most levels of _include:iterate.")
    statement_timeout_ms: int = Field(
        default=60_000, description="Longest a single SQL statement may run (milliseconds)."
    )
    pool_size: int = Field(default=20, description="Database connections per process.")
    # Connections and per-request budgets (docs/configuration.md, Limits).
    header_timeout_s: float = Field(
        default=30, description="Seconds a connection has to send a complete request head."
    )
    keep_alive_timeout_s: int = Field(
        default=5, description="Seconds an idle connection is kept open between requests."
    )
    max_connections: int = Field(default=1000, description="Open connections per process.")
    max_response_entries: int = Field(
        default=10_000, description="Most resources the GET entries of one Bundle may return."
    )
    max_response_bytes: int = Field(
        default=128 * 1024 * 1024, description="Most bytes of resources in one response."
    )
    enforce_referential_integrity_on_write: bool = Field(
        default=True,
        description="Refuse a write whose reference (Type/id, or absolute under base_url) "
        "names a resource this server does not hold, or holds deleted (400).",
    )
    enforce_referential_integrity_on_delete: bool = Field(
        default=True,
        description="Refuse to delete a resource that current resources still refer to (409).",
    )
    log_level: str = Field(default="info")
    # Running as a service (docs/deployment.md).
    log_format: str = Field(
        default="text", description="'text' for readable lines, 'json' for JSON lines."
    )
    log_repeat_limit: int = Field(
        default=5, description="The same warning is logged this often per interval at most."
    )
    log_repeat_interval_s: float = Field(
        default=10.0, description="The interval (seconds) of log_repeat_limit."
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins browser apps may call from ('*': any). "
        "Empty: no cross-origin access.",
    )
    openapi: bool = Field(
        default=False,
        description="Serve FastAPI's /openapi.json. Off: it describes paths, not FHIR.",
    )
    # Background workers (docs/architecture.md, "Workers").
    workers: bool = Field(
        default=True,
        description="Run the background workers (gap engine, outbox pruning) inside "
        "`cmfhir serve`; off (`serve --no-workers`) when `cmfhir worker` runs them apart.",
    )
    gap_evaluators: int = Field(
        default=2,
        description="Gap-engine evaluators per process (each holds a connection while it works).",
    )
    gap_rules: str = Field(
        default="cmfhir.gaps.rules",
        description="The module whose RULES the gap engine runs (tests name their own).",
    )
    gap_sweep_interval_h: float = Field(
        default=24.0, description="Hours between sweeps of every member's care gaps."
    )
    event_retention_days: float = Field(
        default=7.0,
        description="Days an outbox event is kept after every consumer has passed it.",
    )

    # Subscriptions (docs/subscriptions.md).
    subscription_key: str | None = Field(
        default=None,
        description="Fernet key (urlsafe base64 of 32 bytes) sealing Subscription channel "
        "headers and websocket tokens. Unset: a key kept in the database.",
    )
    subscription_endpoints: str = Field(
        default="",
        description="Comma-separated host patterns (*.example.org) rest-hook endpoints may "
        "name. Empty: any public https host.",
    )
    subscription_allow_loopback: bool = Field(
        default=False,
        description="Development: accept http(s) rest-hook endpoints on loopback addresses.",
    )
    subscription_retry_hours: float = Field(
        default=24.0, description="Hours a failing endpoint is retried before 'error'."
    )
    subscription_retention_days: float = Field(
        default=30.0,
        description="Days a delivered notification and a delivery attempt are kept "
        "($events can replay only what is kept).",
    )

    @field_validator("auth")
    @classmethod
    def _known_auth(cls, value: str) -> str:
        if value not in AUTH_MODES:
            raise ValueError(
                f"CMFHIR_AUTH={value!r} is not one of {', '.join(AUTH_MODES)}: refusing to start"
            )
        return value


_LOOPBACK = ("127.", "::1", "localhost")


def check_auth_binding(settings: Settings, host: str) -> str | None:
    """Refuse (ValueError) to serve without authorization on a non-loopback address unless
    told to; the warning to log when serving without it, else None."""
    if settings.auth != "off":
        return None
    loopback = host.startswith(_LOOPBACK) or host == "[::1]"
    if not loopback and not settings.auth_off_i_understand:
        raise ValueError(
            f"CMFHIR_AUTH=off on {host}, which is not a loopback address: anyone who can "
            "reach it could read and change every record. Set CMFHIR_AUTH=smart, bind to "
            "127.0.0.1, or set CMFHIR_AUTH_OFF_I_UNDERSTAND=1."
        )
    return (
        "AUTHORIZATION IS OFF (CMFHIR_AUTH=off): every request may read and change every "
        "record. Use it only for local exploration and tests."
    )
