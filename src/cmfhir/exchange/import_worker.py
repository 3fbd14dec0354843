"""The `$import` worker: claims import jobs from PostgreSQL (`FOR UPDATE SKIP LOCKED`, with
a lease), imports each input as `cmfhir import` does (exchange/importing.py) as the principal
that asked for it, and records after every committed batch how far it got, so a job whose
worker died resumes after the last committed batch when another worker claims it. The loop
is `jobs.JobWorker`, shared with the export worker. Lines are read, validated and indexed
ahead of the writes in `validators` processes (`CMFHIR_IMPORT_VALIDATORS`, by default as
many as the CPUs, at most three), started with the first job and kept until the worker
stops. Follows the worker protocol (`name`, `async run(stop)`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cmfhir.errors import Issue, operation_outcome
from cmfhir.exchange.export.files import file_path, job_dir
from cmfhir.exchange.import_sources import SourceError, download
from cmfhir.exchange.import_validators import default_validators, validator_pool
from cmfhir.exchange.importing import ImportProgress, check_references, import_lines
from cmfhir.exchange.jobs import Cancelled, JobWorker
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext, instant
from cmfhir.store.export_jobs import ExportJob, ImportJobs

__all__ = ["ImportWorker", "import_worker"]

ERRORS = "OperationOutcome.ndjson"


class ImportWorker(JobWorker):
    name = "imports"
    what = "import"
    remove_failed = False

    def __init__(
        self,
        ctx: FhirContext,
        root: Path,
        *,
        export_root: Path,
        expiry_s: int,
        max_bytes: int = 1024**3,
        fetch_timeout_s: float = 600.0,
        poll_s: float = 1.0,
        lease_s: int = 120,
        batch: int = 500,
        validators: int | None = None,
        jobs: ImportJobs | None = None,
    ) -> None:
        self.jobs: ImportJobs = jobs or ImportJobs(ctx.store.engine)
        super().__init__(ctx, self.jobs, root, expiry_s=expiry_s, poll_s=poll_s, lease_s=lease_s)
        self.export_root = export_root
        self.max_bytes = max_bytes
        self.fetch_timeout_s = fetch_timeout_s
        self.batch = batch
        self.validators = default_validators() if validators is None else validators
        # Started with the first job (a server that imports nothing starts no process).
        self.pool: ProcessPoolExecutor | None = None

    def _pool(self, ctx: FhirContext) -> ProcessPoolExecutor | None:
        if self.pool is None:
            self.pool = validator_pool(ctx, self.validators)
        return self.pool

    def close(self) -> None:
        """Stop the validating processes (started again by the next job)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await super().run(stop)
        finally:
            self.close()

    async def _source(self, directory: Path, index: int, source: dict[str, Any]) -> Path:
        if "file" in source:
            path = Path(source["file"])
        elif "export" in source:
            job_id, name = source["export"]
            found = file_path(self.export_root, job_id, name)
            if found is None:
                raise SourceError("it is not an export file")
            path = found
        else:
            path = directory / f"input-{index}.ndjson"
            if not path.is_file():  # downloaded by an earlier attempt, or not yet
                await download(
                    source["http"],
                    path,
                    max_bytes=self.max_bytes,
                    timeout_s=self.fetch_timeout_s,
                )
        if not path.is_file():
            raise SourceError("it is no longer there")
        return path

    async def execute(self, ctx: FhirContext, job: ExportJob) -> tuple[dict[str, Any], datetime]:
        inputs: list[dict[str, Any]] = job.params["inputs"]
        base = str(job.params.get("base", "http://localhost/fhir"))
        state: dict[str, Any] = await self.jobs.state(job.id) or {
            "input": 0,
            "lines_done": 0,
            "stored": 0,
            "refused": 0,
            "errors": 0,
            "errors_bytes": 0,
            "output": [],
            "started": datetime.now(UTC).isoformat(),
        }
        directory = job_dir(self.root, job.id)
        directory.mkdir(parents=True, exist_ok=True)
        errors_path = directory / ERRORS
        with errors_path.open("ab") as handle:  # drop what a dead attempt wrote uncommitted
            handle.truncate(state["errors_bytes"])
        started = datetime.fromisoformat(state["started"])

        def note(outcomes: list[dict[str, Any]]) -> None:
            with errors_path.open("ab") as handle:
                for outcome in outcomes:
                    handle.write(json.dumps(outcome, separators=(",", ":")).encode() + b"\n")
                state["errors_bytes"] = handle.tell()
            state["errors"] += len(outcomes)

        async def checkpoint(summary: str) -> None:
            status = await self.jobs.checkpoint(job.id, state, summary[:99], self.lease_s)
            if status != "in-progress":
                raise Cancelled

        for index, source in enumerate(inputs):
            if index < state["input"]:
                continue
            progress = ImportProgress(
                lines_done=state["lines_done"], stored=state["stored"], refused=state["refused"]
            )

            async def committed(
                done: ImportProgress, refused: list[dict[str, Any]], index: int = index
            ) -> None:
                note(refused)
                state.update(lines_done=done.lines_done, stored=done.stored, refused=done.refused)
                await checkpoint(
                    f"{index} of {len(inputs)} inputs; {done.lines_done} lines of this one"
                )

            try:
                path = await self._source(directory, index, source)
                with path.open("rb") as source_lines:
                    await import_lines(
                        ctx,
                        source_lines,
                        progress,
                        base=base,
                        batch=self.batch,
                        on_commit=committed,
                        validators=self._pool(ctx),
                    )
            except SourceError as error:
                note([_unreadable(source["url"], str(error))])
            state["output"].append(
                {"inputUrl": source["url"], "count": progress.stored, "refused": progress.refused}
            )
            state.update(input=index + 1, lines_done=0, stored=0, refused=0)
            with contextlib.suppress(FileNotFoundError):
                (directory / f"input-{index}.ndjson").unlink()
            await checkpoint(f"{index + 1} of {len(inputs)} inputs")
        note(await check_references(ctx, started))
        errors = []
        if state["errors"]:
            errors.append({"type": "OperationOutcome", "name": ERRORS, "count": state["errors"]})
        manifest = {
            "transactionTime": instant(started),
            "request": job.request,
            "requiresAccessToken": job.principal.get("kind") != "open",
            "output": state["output"],
            "error": errors,
        }
        return manifest, started


def _unreadable(url: str, why: str) -> dict[str, Any]:
    return operation_outcome(
        [
            Issue(
                f"The input '{url}' could not be read: {why}",
                code="exception",
                expression=("input.url",),
            )
        ]
    )


def import_worker(ctx: FhirContext, settings: ExchangeSettings) -> ImportWorker:
    """The worker as `cmfhir serve` and `cmfhir worker` run it, from the settings."""
    return ImportWorker(
        ctx,
        settings.import_work_dir,
        export_root=settings.export_dir,
        expiry_s=settings.export_expiry_s,
        max_bytes=settings.import_max_bytes,
        fetch_timeout_s=settings.import_fetch_timeout_s,
        validators=settings.import_validators,
    )
