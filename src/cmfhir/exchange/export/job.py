"""One export, run by a worker: every resource it asks for read from ONE read-only
REPEATABLE READ snapshot (an export never sees half a transaction), streamed from
server-side cursors into one NDJSON file per type, so memory stays flat whatever the size.

Every read runs as the principal that kicked the export off (the access predicate,
store/access.py): a token exports only what a search by it would find.

`transactionTime` is the history watermark (the start of the oldest write transaction then
in flight, docs/history.md), read on its own connection just BEFORE the snapshot is taken:
every change stamped before it was committed before the snapshot, so it is in the export,
and a change the export does not hold is stamped at or after it, so a later
`_since=transactionTime` export has it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cmfhir.errors import Issue, operation_outcome
from cmfhir.exchange.export.files import job_dir
from cmfhir.exchange.export.request import ExportRequest
from cmfhir.exchange.jobs import Cancelled
from cmfhir.interactions.context import FhirContext, instant
from cmfhir.resources.compartment import patient_compartment
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.types import RESOURCE_TYPES
from cmfhir.search import parse_instant, parse_search
from cmfhir.store import Repository
from cmfhir.store.exchange import (
    patient_ids_in_groups,
    relax_statement_timeout,
    resource_pages,
    stream_deleted,
)
from cmfhir.store.export_jobs import ExportJob, ExportJobs

__all__ = ["Cancelled", "run_export"]

log = logging.getLogger(__name__)
_HEARTBEAT_ROWS = 20_000
# Rows fetched at a time from the snapshot's cursor: all an export holds of a type.
PAGE_ROWS = 2000


class _Writer:
    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self.handle = self.path.open("wb", buffering=1024 * 1024)
        self.count = 0

    def write(self, line: str) -> None:
        self.handle.write(line.encode("utf-8"))
        self.handle.write(b"\n")
        self.count += 1

    def write_page(self, lines: list[str]) -> None:
        if lines:
            self.handle.write("\n".join(lines).encode("utf-8"))
            self.handle.write(b"\n")
            self.count += len(lines)

    def close(self) -> None:
        self.handle.close()


def _types(ctx: FhirContext, request: ExportRequest) -> tuple[list[str], list[str]]:
    """The types to export, and those asked for by `_type` that no scope of the principal
    lets it search (left out, and named in the manifest's `error`)."""
    if request.types is not None:
        asked = request.types
    elif request.level == "system":
        asked = sorted(RESOURCE_TYPES)
    else:
        asked = sorted({"Patient", *ctx.compartment.params})
    # AuditEvents are kept apart and not exported (interactions/audit_store.py).
    allowed = [t for t in asked if ctx.principal.allows(t, "s") and t != "AuditEvent"]
    refused = [t for t in asked if t not in allowed] if request.types is not None else []
    return allowed, refused


async def _patients(repo: Repository, request: ExportRequest) -> list[str] | None:
    """The members the export is about (None: not narrowed to members)."""
    if request.level == "group":
        members = await patient_ids_in_groups(repo, str(request.group)) or []
        if request.patients is not None:
            return sorted(set(members) & set(request.patients))
        return members
    return request.patients


async def _filtered(
    ctx: FhirContext,
    repo: Repository,
    kind: str,
    filters: list[list[tuple[str, str]]],
    since: str | None,
) -> AsyncIterator[tuple[str, str]]:
    """(id, content) of `kind` matching any filter, page by page on the snapshot."""
    seen: set[str] = set()
    for params in filters:
        query = [*params, ("_count", "1000")]
        if since is not None:
            query.append(("_lastUpdated", f"ge{since}"))
        cursor: str | None = None
        while True:
            request = parse_search(
                ctx.registry,
                kind,
                [*query, *([("_cursor", cursor)] if cursor else [])],
                max_count=1000,
            )
            page = await repo.search(request, count_up_to=0)
            for _, id, content in page.matches:
                if len(filters) == 1 or id not in seen:
                    if len(filters) > 1:
                        seen.add(id)
                    yield id, content
            if page.next_cursor is None:
                break
            cursor = page.next_cursor


async def run_export(
    ctx: FhirContext, jobs: ExportJobs, job: ExportJob, root: Path, *, lease_s: int
) -> tuple[dict[str, Any], Any]:
    """Write the job's files and return its manifest and transactionTime."""
    request = ExportRequest.from_json(job.params)
    directory = job_dir(root, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():  # a previous attempt's files (the worker died)
        stale.unlink()
    output: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    since = parse_instant("_since", request.since) if request.since else None
    types, refused = _types(ctx, request)
    filters: dict[str, list[list[tuple[str, str]]]] = {}
    for kind, params in request.type_filters:
        filters.setdefault(kind, []).append(params)
    rows = 0
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as before:
        transaction_time = await before.history_watermark()
    async with ctx.store.snapshot(ctx.principal) as repo:
        await relax_statement_timeout(repo)  # SET takes no snapshot: the next statement does
        patients = await _patients(repo, request)
        member_level = request.level != "system"
        wanted = set(patients) if patients is not None else None
        for position, kind in enumerate(types, 1):
            status = await jobs.heartbeat(
                job.id, f"{position - 1} of {len(types)} types; {rows} resources", lease_s
            )
            if status != "in-progress":
                raise Cancelled
            writer: _Writer | None = None
            if kind in filters:
                source = _filtered(ctx, repo, kind, filters[kind], request.since)
                async for _id, content in source:
                    if member_level:
                        members = patient_compartment(parse_json(content), ctx.compartment)
                        if not members or (wanted is not None and not wanted & set(members)):
                            continue
                    writer = writer or _Writer(directory, f"{kind}.ndjson")
                    writer.write(content)
                    rows += 1
            elif not member_level or kind == "Patient" or ctx.compartment.params_for(kind):
                pages = resource_pages(
                    repo,
                    kind,
                    patients=patients,
                    since=since,
                    member_only=member_level,
                    batch=PAGE_ROWS,
                )
                beat = rows + _HEARTBEAT_ROWS
                async for page in pages:
                    writer = writer or _Writer(directory, f"{kind}.ndjson")
                    writer.write_page([content for _, _, content in page])
                    rows += len(page)
                    if rows >= beat:
                        beat = rows + _HEARTBEAT_ROWS
                        status = await jobs.heartbeat(
                            job.id,
                            f"{position - 1} of {len(types)} types; {rows} resources",
                            lease_s,
                        )
                        if status != "in-progress":
                            writer.close()
                            raise Cancelled
            if writer is not None:
                writer.close()
                output.append({"type": kind, "name": writer.path.name, "count": writer.count})
        if since is not None:
            writer = None
            async for kind, id in stream_deleted(repo, types, since, patients=patients):
                writer = writer or _Writer(directory, "deleted.ndjson")
                writer.write(_deletion_bundle(kind, id))
            if writer is not None:
                writer.close()
                deleted.append({"type": "Bundle", "name": writer.path.name, "count": writer.count})
    errors: list[dict[str, Any]] = []
    if refused:
        writer = _Writer(directory, "OperationOutcome.ndjson")
        for kind in refused:
            writer.write(_refusal(kind))
        writer.close()
        errors.append({"type": "OperationOutcome", "name": writer.path.name, "count": writer.count})
    manifest = {
        "transactionTime": instant(transaction_time),
        "request": job.request,
        "requiresAccessToken": job.principal.get("kind") not in ("open",),
        "output": output,
        "error": errors,
    }
    if since is not None:
        manifest["deleted"] = deleted
    return manifest, transaction_time


def _deletion_bundle(kind: str, id: str) -> str:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": f"{kind}/{id}"}}],
    }
    return json.dumps(bundle, separators=(",", ":"))


def _refusal(kind: str) -> str:
    outcome = operation_outcome(
        [
            Issue(
                f"The token's scopes do not permit exporting {kind}: it is left out",
                code="forbidden",
                expression=("_type",),
            )
        ]
    )
    return json.dumps(outcome, separators=(",", ":"))
