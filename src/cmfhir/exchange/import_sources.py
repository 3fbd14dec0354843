"""Where an `$import` input may come from, checked at kick-off: a file under
`CMFHIR_IMPORT_DIR`, one of this server's own export files (a `$export-file` URL of an export
the same principal asked for), or an http(s) URL on a host of `CMFHIR_IMPORT_ALLOW_HOSTS`
(empty by default: the server fetches nothing a client names, so `$import` cannot be used
to make it reach into its own network). Downloads are bounded in size and time and follow
no redirect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest
from cmfhir.exchange.export.files import file_path
from cmfhir.exchange.principals import require_owner
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.store.export_jobs import ExportJobs

__all__ = ["SourceError", "download", "resolve_source"]

_PORTS = {"http": 80, "https": 443}


class SourceError(Exception):
    """An input that cannot be read (any more): reported in the job's errors."""


def _bad(message: str) -> BadRequest:
    return BadRequest(message, expression=["input.url"])


def _local(root: Path | None, url: str) -> dict[str, Any]:
    if root is None:
        raise BadRequest(
            "$import reads files under CMFHIR_IMPORT_DIR, which is not configured",
            code="not-supported",
            expression=["input.url"],
        )
    parsed = urlparse(url)
    relative = unquote(parsed.path if parsed.scheme == "file" else url)
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise _bad(f"'{url}' is not a file under the import directory")
    return {"url": url, "file": str(path)}


async def _own_export(
    engine: Any, principal: Principal, export_root: Path, url: str, prefix: str
) -> dict[str, Any]:
    job_id, _, name = url.removeprefix(prefix).partition("/")
    path = file_path(export_root, job_id, name)
    job = await ExportJobs(engine).get(job_id) if path is not None else None
    if path is None or job is None or job.status != "completed" or not path.is_file():
        raise _bad(f"'{url}' is not a file of a completed export of this server")
    require_owner(principal, job.principal, "export")
    return {"url": url, "export": [job_id, name]}


def _remote(settings: ExchangeSettings, url: str) -> dict[str, Any]:
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    port = parsed.port or _PORTS[parsed.scheme]
    allowed = settings.import_hosts()
    if not host or (host not in allowed and f"{host}:{port}" not in allowed):
        raise _bad(
            f"'{parsed.scheme}://{parsed.netloc}' is not a host $import may fetch from "
            "(CMFHIR_IMPORT_ALLOW_HOSTS)"
        )
    return {"url": url, "http": url}


async def resolve_source(
    engine: Any,
    principal: Principal,
    settings: ExchangeSettings,
    export_root: Path,
    url: str,
    *,
    base: str,
) -> dict[str, Any]:
    """What the job will read for `url` (stored in its params), or 400 when it may not."""
    scheme = urlparse(url).scheme.lower()
    own = f"{base}/$export-file/"
    if url.startswith(own):
        return await _own_export(engine, principal, export_root, url, own)
    if scheme in ("", "file"):
        return _local(settings.import_dir, url)
    if scheme in _PORTS:
        return _remote(settings, url)
    raise _bad(f"$import does not read {scheme}: URLs")


async def download(url: str, target: Path, *, max_bytes: int, timeout_s: float) -> None:
    """Fetch `url` into `target` (via a `.part` file, renamed once complete)."""
    partial = target.with_name(target.name + ".part")
    try:
        await _fetch(url, partial, max_bytes=max_bytes, timeout_s=timeout_s)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)


async def _fetch(url: str, partial: Path, *, max_bytes: int, timeout_s: float) -> None:
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with (
                httpx.AsyncClient(follow_redirects=False, timeout=30) as http,
                http.stream("GET", url, headers={"Accept": "application/fhir+ndjson"}) as answer,
            ):
                if answer.status_code != 200:
                    raise SourceError(f"fetching it answered HTTP {answer.status_code}")
                with partial.open("wb") as out:
                    async for chunk in answer.aiter_bytes(1024 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise SourceError(f"it is larger than {max_bytes} bytes")
                        out.write(chunk)
    except TimeoutError:
        raise SourceError(f"it could not be fetched within {timeout_s:g} s") from None
    except httpx.HTTPError as error:
        raise SourceError(f"it could not be fetched ({type(error).__name__})") from None
