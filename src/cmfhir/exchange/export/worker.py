"""The export worker: claims export jobs from PostgreSQL (`FOR UPDATE SKIP LOCKED`, with a
lease so a job whose worker died is run again), runs them, and deletes expired jobs and
their files (the loop is `jobs.JobWorker`, shared with the import worker). Follows the
worker protocol (`name`, `async run(stop)`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from cmfhir.exchange.export.job import run_export
from cmfhir.exchange.jobs import JobWorker
from cmfhir.interactions.context import FhirContext
from cmfhir.store.export_jobs import ExportJob, ExportJobs

__all__ = ["ExportWorker"]


class ExportWorker(JobWorker):
    name = "exports"
    what = "export"

    def __init__(
        self,
        ctx: FhirContext,
        root: Path,
        *,
        expiry_s: int,
        poll_s: float = 1.0,
        lease_s: int = 120,
    ) -> None:
        self.jobs: ExportJobs = ExportJobs(ctx.store.engine)
        super().__init__(ctx, self.jobs, root, expiry_s=expiry_s, poll_s=poll_s, lease_s=lease_s)

    async def execute(self, ctx: FhirContext, job: ExportJob) -> tuple[dict[str, Any], datetime]:
        return await run_export(ctx, self.jobs, job, self.root, lease_s=self.lease_s)
