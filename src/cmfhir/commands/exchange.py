"""The exchange features' command line: `cmfhir serve --mllp-port`, and `cmfhir import`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cmfhir.config import Settings

__all__ = ["add_commands"]


class _Environment(argparse.Action):
    """An option of `serve` that is a setting: put in the environment, where every server
    process (uvicorn workers included) reads it once at start."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        os.environ[f"CMFHIR_{self.dest.upper()}"] = str(values)
        setattr(namespace, self.dest, values)


def add_commands(commands: Any) -> None:
    """Add the exchange options and subcommands to `cmfhir`'s subparsers."""
    serve: argparse.ArgumentParser | None = commands.choices.get("serve")
    if serve is not None:
        serve.add_argument(
            "--mllp-port",
            type=int,
            action=_Environment,
            metavar="PORT",
            help="also receive HL7 v2 over MLLP on this port (default: off); peers from "
            "CMFHIR_MLLP_ALLOW (default loopback), TLS with CMFHIR_MLLP_TLS_CERT/KEY",
        )
    summary = "import NDJSON files (one resource a line), resuming where a stopped run ended"
    p_import = commands.add_parser("import", help=summary, description=summary)
    p_import.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p_import.add_argument(
        "--batch", type=int, default=500, help="resources per transaction (default: %(default)s)"
    )
    p_import.add_argument(
        "--validators",
        type=int,
        default=_default_validators(),
        metavar="N",
        help="processes that read, validate and index lines ahead of the writes (0: this "
        "one does; default: as many as the CPUs, at most 3: %(default)s)",
    )
    p_import.add_argument("--quiet", action="store_true", help="no progress bar")
    p_import.set_defaults(func=import_files)


def _default_validators() -> int:
    from cmfhir.exchange.import_validators import default_validators

    return default_validators()


@asynccontextmanager
async def _context(settings: Settings) -> AsyncIterator[Any]:
    """The server's context (database migrated, definitions loaded), built from the layers
    below (`app.open_context` is above the commands)."""
    from cmfhir.interactions import FhirContext, Limits
    from cmfhir.resources.compartment import load_patient_compartment
    from cmfhir.resources.operations import load_operations
    from cmfhir.resources.search_parameters import load_registry
    from cmfhir.store import ReferencePolicy, Store, open_database
    from cmfhir.store.database import embedded_url

    url = settings.database_url or embedded_url(settings.data_dir)
    database = await open_database(url, settings.data_dir, pool_size=2)
    try:
        yield FhirContext(
            store=Store(
                database.engine,
                ReferencePolicy(
                    on_write=settings.enforce_referential_integrity_on_write,
                    on_delete=settings.enforce_referential_integrity_on_delete,
                    bases=(settings.base_url,) if settings.base_url else (),
                ),
            ),
            registry=load_registry(settings.profiles_dir),
            compartment=load_patient_compartment(settings.profiles_dir),
            operations=load_operations(settings.profiles_dir),
            limits=Limits(max_bundle_entries=settings.max_bundle_entries),
        )
    finally:
        await database.dispose()


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".import-state.json")


def _errors_path(path: Path) -> Path:
    return path.with_name(path.name + ".errors.ndjson")


def _save(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data), encoding="utf-8")
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(path)


def _lines(path: Path, advance: Any) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            advance(len(line))
            yield line


async def import_file(
    ctx: Any,
    path: Path,
    *,
    batch: int,
    base: str,
    advance: Any = None,
    check: bool = True,
    since: datetime | None = None,
    validators: Executor | None = None,
) -> tuple[Any, int]:
    """Import one file, resuming from its state file; the progress and the number of
    reference problems found by the final check (with `check`: of everything written
    since `since`, or since this file's import began), reported in its errors file."""
    from cmfhir.exchange.importing import ImportProgress, check_references, dump_line, import_lines

    state = _state_path(path)
    errors = _errors_path(path)
    progress = (
        ImportProgress.from_json(json.loads(state.read_text()))
        if state.exists()
        else ImportProgress(started=datetime.now(UTC).isoformat())
    )
    if progress.complete:
        return progress, 0
    if progress.lines_done == 0 and errors.exists():
        errors.unlink()

    def persist(done: Any, refused: list[dict[str, Any]]) -> None:
        if refused:
            with errors.open("a", encoding="utf-8") as handle:
                handle.writelines(dump_line(o) + "\n" for o in refused)
                handle.flush()
                os.fsync(handle.fileno())
        _save(state, done.to_json())

    await import_lines(
        ctx,
        _lines(path, advance or (lambda n: None)),
        progress,
        base=base,
        batch=batch,
        on_batch=persist,
        validators=validators,
    )
    started = datetime.fromisoformat(str(progress.started))
    dangling = await check_references(ctx, min(since or started, started)) if check else []
    if dangling:
        with errors.open("a", encoding="utf-8") as handle:
            handle.writelines(dump_line(o) + "\n" for o in dangling)
    progress.complete = True
    _save(state, progress.to_json())
    return progress, len(dangling)


async def import_paths(
    ctx: Any,
    paths: Sequence[Path],
    *,
    batch: int,
    base: str,
    advance: Any = None,
    validators: Executor | None = None,
) -> list[tuple[Path, Any, int]]:
    """Import the files in turn (each resuming from its state file), then check the
    references of all of them at once (an export's Encounter file refers to its Patient
    file): the dangling ones are reported in the last file's errors file. Each file with
    its progress and the number of dangling references reported there. `advance(path)`
    answers the callback that is told of the bytes read."""
    done: list[tuple[Path, Any, int]] = []
    since: datetime | None = None
    for number, path in enumerate(paths, 1):
        last = number == len(paths)
        progress, dangling = await import_file(
            ctx,
            path,
            batch=batch,
            base=base,
            advance=advance(path) if advance is not None else None,
            check=last,
            since=since,
            validators=validators,
        )
        if progress.started is not None:
            started = datetime.fromisoformat(str(progress.started))
            since = started if since is None else min(since, started)
        done.append((path, progress, dangling))
    return done


def import_files(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    settings = Settings()
    base = (settings.base_url or "http://localhost/fhir").rstrip("/")
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"cmfhir import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2

    async def run() -> int:
        from cmfhir.exchange.import_validators import validator_pool

        problems = 0
        async with _context(settings) as ctx:
            validators = validator_pool(ctx, args.validators)
            try:
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TimeRemainingColumn(),
                    disable=args.quiet,
                ) as bar:
                    tasks = {p: bar.add_task(p.name, total=p.stat().st_size) for p in args.files}
                    done = await import_paths(
                        ctx,
                        args.files,
                        batch=args.batch,
                        base=base,
                        advance=lambda p: lambda n: bar.advance(tasks[p], n),
                        validators=validators,
                    )
                    for path, progress, dangling in done:
                        bar.update(tasks[path], completed=path.stat().st_size)
                        problems += progress.refused + dangling
                        print(
                            f"{path}: {progress.stored} stored, {progress.refused} refused, "
                            f"{dangling} dangling references"
                            + (
                                f" (see {_errors_path(path)})"
                                if progress.refused + dangling
                                else ""
                            )
                        )
            finally:
                if validators is not None:
                    validators.shutdown()
        return 1 if problems else 0

    return asyncio.run(run())
