"""What `$export` and `$import` share (https://hl7.org/fhir/uv/bulkdata/export.html and the
import draft that follows it): the kick-off's 202 with the `Content-Location` to poll, a job
found for the principal that asked for it, the status answer (202 with `X-Progress` and
`Retry-After`, then 200 with the manifest), the cancel answer, a job's file streamed, and
the worker loop that claims jobs from PostgreSQL (`FOR UPDATE SKIP LOCKED` with a lease)
and deletes expired ones with their files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from cmfhir.errors import BadRequest, FhirError, Issue, NotFound, operation_outcome
from cmfhir.exchange.export.files import remove_job_files
from cmfhir.exchange.principals import principal_from_json, principal_json, require_owner
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.store.export_jobs import ExportJob, ExportJobs

__all__ = [
    "Cancelled",
    "JobFailed",
    "JobWorker",
    "accepted",
    "cancel_job",
    "owned_job",
    "require_async",
    "start_job",
    "status_answer",
    "stream_file",
]

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was cancelled (DELETE) while it ran."""


class JobFailed(FhirError):
    status = 500
    code = "exception"


def require_async(respond_async: bool, operation: str) -> None:
    """Bulk Data kick-offs run asynchronously only (`Prefer: respond-async`)."""
    if not respond_async:
        raise BadRequest(f"{operation} runs asynchronously: send 'Prefer: respond-async'")


async def start_job(
    ctx: FhirContext,
    jobs: ExportJobs,
    what: str,
    request_url: str,
    params: dict[str, Any],
    status_url: str,
) -> Result:
    """Record a job asked for by `ctx.principal` (the worker runs it as that principal)
    and answer the kick-off: 202 with `status_url/<job>` to poll."""
    job_id = uuid.uuid4().hex
    await jobs.create(job_id, request_url, params, principal_json(ctx.principal))
    return accepted(what, f"{status_url}/{job_id}")


def accepted(what: str, status_url: str) -> Result:
    """The kick-off's answer: 202, an informational OperationOutcome, the URL to poll."""
    outcome = operation_outcome(
        [
            Issue(
                f"The {what} is accepted; poll the Content-Location",
                code="informational",
                severity="information",
            )
        ]
    )
    return Result(202, outcome, headers={"Content-Location": status_url})


async def owned_job(ctx: FhirContext, jobs: ExportJobs, job_id: str, what: str) -> ExportJob:
    """The job, for the principal that asked for it; 404 once cancelled or expired."""
    job = await jobs.get(job_id)
    if job is None or job.status == "cancelled":
        raise NotFound(f"No such {what} (it may have been cancelled or have expired)")
    require_owner(ctx.principal, job.principal, what)
    if job.expires_at is not None and job.expires_at <= datetime.now(UTC):
        raise NotFound(f"This {what} has expired")
    return job


def status_answer(
    job: ExportJob,
    what: str,
    file_url: str,
    files: tuple[str, ...],
    *,
    always: tuple[str, ...] = (),
) -> Result:
    """202 with `X-Progress` while the job runs; 200 with its manifest once done, each of
    the manifest's `files` lists (and the `always` ones, empty if missing) pointing at
    `file_url/<job>/<name>`; a failed job answers 500 saying why."""
    if job.status in ("accepted", "in-progress"):
        progress = (job.progress or job.status)[:99]
        return Result(202, None, headers={"X-Progress": progress, "Retry-After": "2"})
    if job.status == "failed":
        raise JobFailed(job.error or f"The {what} failed")
    manifest = dict(job.manifest or {})
    for key in files:
        if key in manifest or key in always:
            manifest[key] = [
                {
                    "type": item["type"],
                    "url": f"{file_url}/{job.id}/{item['name']}",
                    **({"count": item["count"]} if "count" in item else {}),
                }
                for item in manifest.get(key, [])
            ]
    headers = {}
    if job.expires_at is not None:
        headers["Expires"] = format_datetime(job.expires_at, usegmt=True)
    return Result(200, manifest, headers=headers, media_type="application/json")


async def cancel_job(
    ctx: FhirContext, jobs: ExportJobs, job_id: str, root: Path, what: str, said: str
) -> Result:
    """DELETE on the status URL: the job cancelled, its files removed, 202 saying `said`."""
    job = await owned_job(ctx, jobs, job_id, what)
    if not await jobs.cancel(job.id):
        raise NotFound(f"No such {what}")
    remove_job_files(root, job.id)
    outcome = operation_outcome([Issue(said, code="informational", severity="information")])
    return Result(202, outcome)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(256 * 1024):
            yield chunk


def stream_file(path: Path, media_type: str) -> Result:
    """A job's file, streamed in chunks (memory flat whatever its size)."""
    return Result(200, stream=_chunks(path), media_type=media_type)


class JobWorker:
    """The loop of a bulk job worker: delete the expired jobs' files, claim a job, wait
    `poll_s` when none waits. The database away (restart, failover) is a warning, not a
    traceback every poll; the next poll tries again. A claimed job runs as the principal
    that asked for it, never as the worker's own (trusted) one: the subclass's `execute`
    answers its manifest and transaction time, or raises `Cancelled` when the job was
    cancelled while it ran (its files are removed)."""

    name = "jobs"
    what = "job"
    # Whether a failed job's files are removed at once (else when the job expires).
    remove_failed = True

    def __init__(
        self,
        ctx: FhirContext,
        jobs: ExportJobs,
        root: Path,
        *,
        expiry_s: int,
        poll_s: float,
        lease_s: int,
    ) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.root = root
        self.expiry_s = expiry_s
        self.poll_s = poll_s
        self.lease_s = lease_s

    async def execute(self, ctx: FhirContext, job: ExportJob) -> tuple[dict[str, Any], datetime]:
        raise NotImplementedError

    async def run_job(self, job: ExportJob) -> None:
        ctx = replace(self.ctx, principal=principal_from_json(job.principal))
        try:
            manifest, transaction_time = await self.execute(ctx, job)
        except Cancelled:
            remove_job_files(self.root, job.id)
            return
        except Exception as error:
            log.exception("%s %s failed", self.what, job.id)
            failed = f"The {self.what} failed ({type(error).__name__})"
            await self.jobs.fail(job.id, failed, self.expiry_s)
            if self.remove_failed:
                remove_job_files(self.root, job.id)
            return
        if not await self.jobs.complete(job.id, manifest, transaction_time, self.expiry_s):
            remove_job_files(self.root, job.id)  # cancelled as it finished

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            job: ExportJob | None
            try:
                await self.sweep()
                job = await self.jobs.claim(self.lease_s)
            except Exception as error:
                log.warning("%s worker: cannot claim jobs (%s)", self.what, type(error).__name__)
                job = None
            if job is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_s)
                continue
            await self.run_job(job)

    async def run_once(self) -> bool:
        """Claim and run one job if one waits (tests, `cmfhir` commands)."""
        job = await self.jobs.claim(self.lease_s)
        if job is None:
            return False
        await self.run_job(job)
        return True

    async def sweep(self) -> None:
        for job_id in await self.jobs.expired():
            remove_job_files(self.root, job_id)
