"""`$import` (POST, system level), asynchronous like `$export`
(https://github.com/smart-on-fhir/bulk-import/blob/master/import.md, the Bulk Data import
draft): the kick-off checks the `Parameters` body and every input's source
(`import_sources.py`), records a job and answers 202 with a `Content-Location` to poll;
a worker (`import_worker.py`) runs it. Status answers 202 with `X-Progress` until the
manifest (200); DELETE cancels; the OperationOutcome NDJSON of refused lines is served to
the principal that asked for the import."""

from __future__ import annotations

from pathlib import Path

from cmfhir.errors import BadRequest, NotFound
from cmfhir.exchange.access import require_system
from cmfhir.exchange.export.files import file_path
from cmfhir.exchange.export.kickoff import NDJSON, export_root
from cmfhir.exchange.import_sources import resolve_source
from cmfhir.exchange.jobs import (
    cancel_job,
    owned_job,
    require_async,
    start_job,
    status_answer,
    stream_file,
)
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.store.export_jobs import ExportJob, ImportJobs

__all__ = ["cancel", "import_file", "kickoff", "run", "status"]

_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")


def _inputs(call: OperationCall) -> list[str]:
    urls = []
    for entry in call.parameters.get("parameter", []):
        if entry.get("name") != "input":
            continue
        url = next(
            (
                str(part.get("valueUri") or part.get("valueUrl") or part.get("valueString") or "")
                for part in entry.get("part", [])
                if part.get("name") == "url"
            ),
            "",
        )
        if not url:
            raise BadRequest("Each input needs a url part", expression=["input.url"])
        urls.append(url)
    if not urls:
        raise BadRequest("$import needs at least one input", expression=["input"])
    return urls


async def kickoff(
    ctx: FhirContext, call: OperationCall, *, respond_async: bool, request_url: str, base: str
) -> Result:
    require_system(ctx.principal, "$import")
    require_async(respond_async, "$import")
    fmt = call.value("inputFormat")
    if fmt is not None and fmt not in _FORMATS:
        raise BadRequest(f"inputFormat '{fmt}' is not supported", expression=["inputFormat"])
    settings = ExchangeSettings()
    inputs = [
        await resolve_source(
            ctx.store.engine, ctx.principal, settings, export_root(), url, base=base
        )
        for url in _inputs(call)
    ]
    params = {"inputs": inputs, "base": base}
    jobs = ImportJobs(ctx.store.engine)
    return await start_job(ctx, jobs, "import", request_url, params, f"{base}/$import-status")


def import_root() -> Path:
    return ExchangeSettings().import_work_dir


async def _job(ctx: FhirContext, job_id: str) -> ExportJob:
    return await owned_job(ctx, ImportJobs(ctx.store.engine), job_id, "import")


async def status(ctx: FhirContext, job_id: str, *, base: str) -> Result:
    job = await _job(ctx, job_id)
    return status_answer(job, "import", f"{base}/$import-file", ("error",), always=("error",))


async def cancel(ctx: FhirContext, job_id: str) -> Result:
    said = "The import is cancelled; what it stored before stays stored"
    jobs = ImportJobs(ctx.store.engine)
    return await cancel_job(ctx, jobs, job_id, import_root(), "import", said)


async def import_file(ctx: FhirContext, job_id: str, name: str) -> Result:
    path = file_path(import_root(), job_id, name)
    if path is None or name.startswith("input-"):
        raise NotFound("No such import file")
    job = await _job(ctx, job_id)
    if job.status != "completed" or not path.is_file():
        raise NotFound("No such import file")
    return stream_file(path, NDJSON)


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    """The registered implementation, reached only where routes/bulk.py does not route
    `$import` (it is defined at system level only, which routes/bulk.py serves)."""
    raise BadRequest("$import is invoked at system level with POST", code="not-supported")
