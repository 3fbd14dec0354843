"""`GET /reports/<name>`: the care-management reports for spreadsheets and BI tools, as JSON
or CSV (`?organization=ID|practitioner=ID|group=ID&period=YYYY-MM[..YYYY-MM]&format=json|csv`),
under the same bearer-token authorization as the FHIR API, counting only what the token may
see (reports/run.py, docs/reports.md).

JSON gives the summary and a page of the rows (`_count`, default 100, `all` for every row;
`_offset`, default 0); CSV, a download, every row unless `_count` is given.
The same reports are `Measure/<name>/$evaluate-measure` in FHIR (reports/)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cmfhir.errors import BadRequest
from cmfhir.interactions.context import FhirContext
from cmfhir.reports.config import ReportConfig
from cmfhir.reports.render import as_csv
from cmfhir.reports.run import ALL_ROWS, Page, Scope, parse_period, run_report
from cmfhir.routes.bearer import authorize_request

__all__ = ["reports_router"]

reports_router = APIRouter(include_in_schema=False)

_KNOWN = {"organization", "practitioner", "group", "period", "format", "_count", "_offset"}
# The rows a JSON report gives unless `_count` says otherwise: a screen's worth, beside the
# summary over every row. Every row: `_count=all`, or the CSV.
_PAGE_SIZE = 100


def _whole(query: dict[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or len(value) > 9:
        raise BadRequest(
            f"'{name}' is a whole number of rows, 0 or more"
            + (" (or 'all')" if name == "_count" else ""),
            expression=[name],
        )
    return int(value)


def _page(query: dict[str, str], output: str) -> Page:
    """`_count` rows (`all`: every row) from the `_offset`th; by default a page for JSON
    and every row for CSV."""
    offset = _whole(query, "_offset", 0)
    if query.get("_count") == "all" or ("_count" not in query and output == "csv"):
        return Page(offset) if offset else ALL_ROWS
    return Page(offset, _whole(query, "_count", _PAGE_SIZE))


@reports_router.get("/reports/{name}")
async def report(request: Request, name: str) -> Response:
    query = request.query_params
    unknown = sorted(set(query) - _KNOWN)
    if unknown:
        raise BadRequest(
            f"Unknown parameter '{unknown[0]}' (known: {', '.join(sorted(_KNOWN))})",
            expression=[unknown[0]],
        )
    if "period" not in query:
        raise BadRequest(
            "A report needs 'period' (YYYY-MM or YYYY-MM..YYYY-MM)", expression=["period"]
        )
    output = query.get("format", "json")
    if output not in ("json", "csv"):
        raise BadRequest("'format' is json or csv", expression=["format"])
    page = _page(dict(query), output)
    # Acting as the request's bearer token, like every FHIR interaction (routes/bearer.py).
    context: FhirContext = await authorize_request(request, request.app.state.fhir)
    config: ReportConfig = request.app.state.report_config
    scope = Scope(query.get("organization"), query.get("practitioner"), query.get("group"))
    found = await run_report(
        context.store, config, context.principal, name, scope, parse_period(query["period"]), page
    )
    headers = {"Cache-Control": "no-store"}
    if output == "csv":
        headers["Content-Disposition"] = (
            f'attachment; filename="{found.name}-{found.period.label.replace("..", "_")}.csv"'
        )
        return Response(as_csv(found), media_type="text/csv; charset=utf-8", headers=headers)
    return JSONResponse(found.as_json(), headers=headers)
