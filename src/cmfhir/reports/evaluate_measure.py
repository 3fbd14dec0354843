"""`Measure/[id]/$evaluate-measure` (https://hl7.org/fhir/R4/measure-operation-evaluate-measure.html)
for the care-management reports: `Measure/caseload`, `Measure/contact-compliance` … each
evaluated in SQL over the period's whole months and answered with a MeasureReport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from cmfhir.errors import BadRequest, NotFound
from cmfhir.interactions.context import FhirContext, Result
from cmfhir.interactions.operations.call import OperationCall
from cmfhir.reports.config import ReportConfig
from cmfhir.reports.measure import REPORT_TYPES, measure_report
from cmfhir.reports.run import REPORTS, Period, Scope, run_report

__all__ = ["evaluate_measure"]

_MEASURE_BASE = "https://cmfhir.org/fhir/Measure/"
_SUBJECTS = {"Patient": "patient", "Group": "group", "Organization": "organization"}


def _day(call: OperationCall, name: str) -> date:
    value = call.value(name)
    if not isinstance(value, str) or len(value) < 7:
        raise BadRequest(f"${call.code} needs '{name}' as a date", expression=[name])
    try:
        return date.fromisoformat(value[:10] if len(value) >= 10 else value + "-01")
    except ValueError as error:
        raise BadRequest(f"'{name}' is not a date: {value}", expression=[name]) from error


def _scope(call: OperationCall) -> Scope:
    found: dict[str, Any] = {}
    subject = call.value("subject")
    if subject is not None:
        kind, _, id = str(subject).partition("/")
        if kind not in _SUBJECTS or not id:
            raise BadRequest(
                "'subject' names a Patient, Group or Organization (Type/id)",
                expression=["subject"],
            )
        found[_SUBJECTS[kind]] = id
    practitioner = call.value("practitioner")
    if practitioner is not None:
        found["practitioner"] = str(practitioner).removeprefix("Practitioner/")
    return Scope(**found)


def evaluate_measure(
    config: ReportConfig,
) -> Callable[[FhirContext, OperationCall], Awaitable[Result]]:
    async def run(ctx: FhirContext, call: OperationCall) -> Result:
        name = call.id
        if name not in REPORTS:
            raise NotFound(
                f"Measure/{name} is not a report this server evaluates "
                f"(these are: {', '.join(REPORTS)})",
                expression=["id"],
            )
        start, end = _day(call, "periodStart"), _day(call, "periodEnd")
        if end < start:
            raise BadRequest("periodEnd is before periodStart", expression=["periodEnd"])
        period = Period(start.replace(day=1), end.replace(day=1))
        report_type = call.value("reportType") or "summary"
        if report_type not in REPORT_TYPES:
            raise BadRequest(
                f"reportType must be one of {', '.join(REPORT_TYPES)}",
                expression=["reportType"],
            )
        scope = _scope(call)
        if REPORT_TYPES[report_type] == "individual" and scope.patient is None:
            raise BadRequest(
                "An individual report names its Patient in 'subject'", expression=["subject"]
            )
        # From the report's rows for a MeasureReport where it has them (fewer than its
        # member-months: store/reporting.py's MEASURE_SQL).
        report = await run_report(
            ctx.store, config, ctx.principal, name, scope, period, measure=True
        )
        body = measure_report(report, _MEASURE_BASE + name, report_type)
        return Result(200, body, resource_type="MeasureReport")

    return run
