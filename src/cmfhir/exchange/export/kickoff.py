"""The Bulk Data endpoints' interactions (https://hl7.org/fhir/uv/bulkdata/export.html):
kick-off (202 + Content-Location), status (202 with X-Progress and Retry-After, then 200
with the manifest), cancel (DELETE, 202), and the files, served to the principal that
asked for the export."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, NotFound
from cmfhir.exchange.access import Forbidden
from cmfhir.exchange.export.files import file_path
from cmfhir.exchange.export.request import export_request
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
from cmfhir.store.export_jobs import ExportJob, ExportJobs

__all__ = ["cancel", "export_file", "export_root", "kickoff", "may_export", "status"]

NDJSON = "application/fhir+ndjson"


@lru_cache(maxsize=1)
def _settings() -> ExchangeSettings:
    return ExchangeSettings()


def export_root() -> Path:
    return _settings().export_dir


def may_export(principal: Principal, level: str) -> None:
    """Who may kick an export off (https://hl7.org/fhir/uv/bulkdata/export.html#authorization):
    a backend client (system/ scopes) or a user token at every level, each getting only
    what its access predicate lets it see; a member's token (patient/ scopes) at Patient
    and Group level only, getting its own record. The Bulk Data IG authorizes exports
    with SMART Backend Services (system/ scopes) and requires only that the data be
    limited to what the client may see; refusing a member's token at system level (the
    server's data as a whole) is this server's choice: its record is `Patient/$export`."""
    if principal.unrestricted:
        return
    if not principal.allows(None, "s"):
        raise Forbidden("The token's scopes permit no search: it can export nothing")
    if principal.kind == "patient" and level == "system":
        raise Forbidden(
            "A system-level export needs a system/ or user/ token; a patient token exports "
            "its own record with Patient/$export"
        )


async def kickoff(
    ctx: FhirContext,
    call: OperationCall,
    *,
    respond_async: bool,
    posted: bool,
    request_url: str,
    base: str,
) -> Result:
    require_async(respond_async, "$export")
    if call.resource_type is None:
        level, group = "system", None
    elif call.resource_type == "Patient" and call.id is None:
        level, group = "patient", None
    elif call.resource_type == "Group" and call.id is not None:
        level, group = "group", call.id
    else:
        raise BadRequest(
            "$export is invoked at system level, on Patient, or on a Group instance",
            code="not-supported",
        )
    may_export(ctx.principal, level)
    request = export_request(ctx, call, level, group, posted=posted)
    if group is not None:
        async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
            stored = await repo.read("Group", group)
        if stored is None or stored.deleted:
            raise NotFound(f"Group/{group} is not known")
    jobs = ExportJobs(ctx.store.engine)
    status_url = f"{base}/$export-status"
    return await start_job(ctx, jobs, "export", request_url, request.to_json(), status_url)


async def _job(ctx: FhirContext, job_id: str) -> ExportJob:
    return await owned_job(ctx, ExportJobs(ctx.store.engine), job_id, "export")


async def status(ctx: FhirContext, job_id: str, *, base: str) -> Result:
    job = await _job(ctx, job_id)
    return status_answer(job, "export", f"{base}/$export-file", ("output", "error", "deleted"))


async def cancel(ctx: FhirContext, job_id: str) -> Result:
    jobs = ExportJobs(ctx.store.engine)
    return await cancel_job(ctx, jobs, job_id, export_root(), "export", "The export is cancelled")


async def export_file(ctx: FhirContext, job_id: str, name: str) -> Result:
    path = file_path(export_root(), job_id, name)
    if path is None:
        raise NotFound("No such export file")
    job = await _job(ctx, job_id)
    if job.status != "completed" or not path.is_file():
        raise NotFound("No such export file")
    return stream_file(path, NDJSON)


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    """The registered implementation, reached only where routes/bulk.py does not route
    `$export` (a level or type it is not defined at, which invoke refuses first)."""
    raise BadRequest(
        "$export is invoked at system level, on Patient, or on a Group instance",
        code="not-supported",
    )
