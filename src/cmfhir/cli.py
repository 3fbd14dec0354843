"""The `cmfhir` command: serve, migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging.config
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cmfhir.commands import auth as auth_commands
from cmfhir.config import Settings, check_auth_binding

if TYPE_CHECKING:
    from cmfhir.interactions import FhirContext

T = TypeVar("T")

__all__ = ["main"]


def _database_url(settings: Settings) -> str:
    """The external URL, or the embedded PostgreSQL's, started (and kept) by this process."""
    if settings.database_url:
        return settings.database_url
    from cmfhir.store.database import embedded_url

    return embedded_url(settings.data_dir)


async def _migrate(url: str, settings: Settings) -> None:
    from cmfhir.store import open_database

    database = await open_database(url, settings.data_dir, pool_size=1)
    await database.dispose()


def _raise_open_files_limit(settings: Settings) -> None:
    """Every connection holds a file descriptor: take the most the system allows, and say
    so when that is still fewer than the connection cap needs."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    needed = settings.max_connections + settings.pool_size + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("cmfhir").warning(
            "open files limit %d is below the %d that CMFHIR_MAX_CONNECTIONS=%d needs; "
            "raise it (ulimit -n) or lower CMFHIR_MAX_CONNECTIONS",
            soft,
            needed,
            settings.max_connections,
        )


def _exit_while_starting(signum: int, frame: object) -> None:
    """A stop asked for before uvicorn serves: unwind, so the embedded PostgreSQL stops."""
    raise SystemExit(0)


def _run_uvicorn(args: argparse.Namespace, settings: Settings, log_config: dict[str, Any]) -> None:
    """uvicorn with cmfhir's protocol; several workers each listen on a socket of their own
    (`cmfhir.listeners`), so the kernel spreads keep-alive connections over them."""
    import uvicorn

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "log_config": log_config,
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        # Request-head timeout and connection cap (cmfhir.connections), read from the
        # environment in each worker.
        "http": "cmfhir.connections:GuardedHttpProtocol",
        "timeout_keep_alive": settings.keep_alive_timeout_s,
    }
    from cmfhir.listeners import ReusePortMultiprocess, reuse_port_supported

    if args.workers <= 1 or not reuse_port_supported():
        uvicorn.run("cmfhir.app:create_app", factory=True, **options)
        return
    config = uvicorn.Config("cmfhir.app:create_app", factory=True, **options)
    with contextlib.suppress(KeyboardInterrupt):
        ReusePortMultiprocess(config).run()


def _default_apps_origins(settings: Settings, args: argparse.Namespace) -> None:
    """On a loopback address with no public URL configured, the built-in apps' redirect
    URIs are this address and localhost on the same port (docs/apps.md)."""
    if settings.apps_origins or settings.base_url:
        return
    if args.host in ("127.0.0.1", "localhost"):
        os.environ["CMFHIR_APPS_ORIGINS"] = (
            f"http://127.0.0.1:{args.port},http://localhost:{args.port}"
        )
    elif args.host in ("::1", "[::1]"):
        os.environ["CMFHIR_APPS_ORIGINS"] = f"http://[::1]:{args.port}"


def serve(args: argparse.Namespace) -> int:
    from cmfhir.logs import logging_config

    try:
        settings = Settings()
        auth_warning = check_auth_binding(settings, args.host)
    except ValueError as error:
        print(f"cmfhir serve: {error}", file=sys.stderr)
        return 2
    log_config = logging_config(
        settings.log_level,
        settings.log_format,
        repeat_limit=settings.log_repeat_limit,
        repeat_interval=settings.log_repeat_interval_s,
    )
    logging.config.dictConfig(log_config)
    _raise_open_files_limit(settings)
    if auth_warning:
        logging.getLogger("cmfhir").warning(auth_warning)
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _exit_while_starting)
    embedded = None
    url = settings.database_url
    try:
        if url is None:
            from cmfhir.store.database import EmbeddedPostgres

            # Started once, here: workers inherit the URL, and this process stops it at exit.
            embedded = EmbeddedPostgres(settings.data_dir)
            url = embedded.start()
            embedded.watch()
        asyncio.run(_migrate(url, settings))
        os.environ["CMFHIR_DATABASE_URL"] = url
        if args.no_workers:
            os.environ["CMFHIR_WORKERS"] = "false"
        _default_apps_origins(settings, args)
        # uvicorn re-raises the signal that stopped it once it has drained; with this handler
        # in place that re-raise returns here, so the process exits 0 after stopping the
        # embedded PostgreSQL.
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, lambda signum, frame: None)
        _run_uvicorn(args, settings, log_config)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = Settings()
    asyncio.run(_migrate(_database_url(settings), settings))
    print("schema is up to date")
    return 0


def _with_context(work: Callable[[FhirContext], Awaitable[T]]) -> T:
    """Run `work` with the server's context (database migrated, definitions loaded)."""
    from cmfhir.app import open_context

    settings = Settings()
    url = _database_url(settings)

    async def run() -> T:
        async with open_context(settings.model_copy(update={"database_url": url})) as ctx:
            return await work(ctx)

    return asyncio.run(run())


def reindex(args: argparse.Namespace) -> int:
    from cmfhir.errors import FhirError
    from cmfhir.interactions.reindex import reindex as rebuild

    try:
        count = _with_context(lambda ctx: rebuild(ctx, args.type))
    except FhirError as error:
        print(f"cmfhir reindex: {error.diagnostics}", file=sys.stderr)
        return 2
    print(f"reindexed {count} resources")
    return 0


def check(args: argparse.Namespace) -> int:
    from cmfhir.interactions.check import check as inspect

    problems = _with_context(inspect)
    if not problems:
        print("consistent: current versions, history, outbox and index rows agree")
        return 0
    for label, where in problems.items():
        print(f"{label}: {', '.join(where)}")
    return 1


_SETTINGS = (
    "Settings come from CMFHIR_* environment variables (docs/configuration.md); without "
    "CMFHIR_DATABASE_URL the embedded PostgreSQL in CMFHIR_DATA_DIR (default .data) is used."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cmfhir", description="cmfhir FHIR server")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, epilog=_SETTINGS)

    p_serve = command("serve", "serve the FHIR API (and /healthz, /readyz)")
    p_serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    p_serve.add_argument(
        "--port", type=int, default=8080, help="TCP port to listen on (default: %(default)s)"
    )
    p_serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port; about one per core (default: %(default)s)",
    )
    p_serve.add_argument(
        "--no-workers",
        action="store_true",
        help="run no background workers (gap engine, outbox pruning) in this process; "
        "`cmfhir worker` runs them apart (default: they run here)",
    )
    p_serve.set_defaults(func=serve)
    p_migrate = command("migrate", "apply schema migrations and exit")
    p_migrate.set_defaults(func=migrate)
    p_reindex = command("reindex", "rebuild the search index after search parameters changed")
    p_reindex.add_argument(
        "--type",
        metavar="TYPE",
        help="only resources of this type, e.g. Patient (default: every type)",
    )
    p_reindex.set_defaults(func=reindex)
    p_check = command("check", "verify stored versions, history and indexes")
    p_check.set_defaults(func=check)
    from cmfhir.commands import content as content_commands
    from cmfhir.commands import gaps, workers
    from cmfhir.commands import reports as report_commands

    workers.add_commands(commands, _with_context)
    gaps.add_commands(commands, _with_context)
    report_commands.add_commands(commands)
    content_commands.add_commands(commands)
    auth_commands.add_commands(commands)

    from cmfhir.commands.exchange import add_commands as add_exchange_commands

    add_exchange_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
