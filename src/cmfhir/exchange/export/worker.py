"""The export worker: claims export jobs from PostgreSQL (`FOR UPDATE SKIP LOCKED`, with a
lease so a job whose worker died is run again), runs them, and deletes expired jobs and
their files. Follows the worker protocol (`name`, `async run(stop)`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from pathlib import Path

from cmfhir.exchange.export.files import remove_job_files
from cmfhir.exchange.export.job import Cancelled, run_export
from cmfhir.exchange.principals import principal_from_json
from cmfhir.interactions.context import FhirContext
from cmfhir.store.export_jobs import ExportJob, ExportJobs

__all__ = ["ExportWorker"]

log = logging.getLogger(__name__)


class ExportWorker:
    name = "exports"

    def __init__(
        self,
        ctx: FhirContext,
        root: Path,
        *,
        expiry_s: int,
        poll_s: float = 1.0,
        lease_s: int = 120,
    ) -> None:
        self.ctx = ctx
        self.root = root
        self.expiry_s = expiry_s
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.jobs = ExportJobs(ctx.store.engine)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
                job = await self.jobs.claim(self.lease_s)
            except Exception as error:
                # The database away (restart, failover): a warning (rate-limited like the
                # others), not a traceback every poll; the next poll tries again.
                log.warning("export worker: cannot claim jobs (%s)", type(error).__name__)
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

    async def run_job(self, job: ExportJob) -> None:
        # As the principal that asked for it, never as the worker's own (trusted) one.
        ctx = replace(self.ctx, principal=principal_from_json(job.principal))
        try:
            manifest, transaction_time = await run_export(
                ctx, self.jobs, job, self.root, lease_s=self.lease_s
            )
        except Cancelled:
            remove_job_files(self.root, job.id)
            return
        except Exception as error:
            log.exception("export %s failed", job.id)
            await self.jobs.fail(
                job.id, f"The export failed ({type(error).__name__})", self.expiry_s
            )
            remove_job_files(self.root, job.id)
            return
        if not await self.jobs.complete(job.id, manifest, transaction_time, self.expiry_s):
            remove_job_files(self.root, job.id)  # cancelled as it finished
