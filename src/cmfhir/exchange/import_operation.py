"""`$import` (POST, system level): NDJSON files the server may read, named in a Parameters
body (`input.url`: a path, or a file: URL, under `CMFHIR_IMPORT_DIR`), imported as
`cmfhir import` does, synchronously. The answer is an OperationOutcome: one information
issue per file with its counts, one issue per refused line (the first 1,000)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cmfhir.errors import BadRequest, Issue
from cmfhir.exchange.access import require_system
from cmfhir.exchange.importing import ImportProgress, check_references, import_lines
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall

__all__ = ["run"]

_MAX_ISSUES = 1000


def _source(root: Path | None, url: str) -> Path:
    if root is None:
        raise BadRequest(
            "$import reads files under CMFHIR_IMPORT_DIR, which is not configured",
            code="not-supported",
        )
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        raise BadRequest(
            f"$import reads files under the import directory, not {parsed.scheme}: URLs",
            code="not-supported",
            expression=["input.url"],
        )
    relative = unquote(parsed.path if parsed.scheme == "file" else url)
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise BadRequest(
            f"'{url}' is not a file under the import directory", expression=["input.url"]
        )
    return path


def _inputs(call: OperationCall) -> list[str]:
    urls = []
    for entry in call.parameters.get("parameter", []):
        if entry.get("name") != "input":
            continue
        url = next(
            (
                str(part.get("valueUri") or part.get("valueUrl") or "")
                for part in entry.get("part", [])
                if part.get("name") == "url"
            ),
            "",
        )
        if not url:
            raise BadRequest("Each input needs a url part", expression=["input.url"])
        urls.append(url)
    return urls


async def run(ctx: FhirContext, call: OperationCall) -> Result:
    require_system(ctx.principal, "$import")
    fmt = call.value("inputFormat")
    if fmt is not None and fmt not in ("application/fhir+ndjson", "application/ndjson"):
        raise BadRequest(f"inputFormat '{fmt}' is not supported", expression=["inputFormat"])
    root = ExchangeSettings().import_dir
    paths = [_source(root, url) for url in _inputs(call)]
    started = datetime.now(UTC)
    issues: list[Issue] = []
    refused_issues: list[dict[str, Any]] = []

    def collect(progress: ImportProgress, refused: list[dict[str, Any]]) -> None:
        refused_issues.extend(refused)

    for path in paths:
        with path.open("rb") as handle:
            progress = await import_lines(
                ctx, handle, ImportProgress(), base="http://localhost/fhir", on_batch=collect
            )
        issues.append(
            Issue(
                f"{path.name}: {progress.stored} stored, {progress.refused} refused",
                code="informational",
                severity="information",
            )
        )
    refused_issues.extend(await check_references(ctx, started))
    for outcome in refused_issues[:_MAX_ISSUES]:
        for issue in outcome["issue"]:
            issues.append(
                Issue(
                    issue["diagnostics"],
                    code=issue["code"],
                    severity=issue["severity"],
                    expression=tuple(issue.get("expression", ())),
                )
            )
    return Result(200, {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]})
