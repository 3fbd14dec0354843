"""Running a report: its period and scope checked, its SQL run in one snapshot
(store/reporting.py), its rows shaped for people (a care manager sees names of columns,
dates as days, small groups suppressed) and summarised.

A report is `(name, Scope, Period)` → `Report`; the FHIR `$evaluate-measure`, the
`/reports/<name>` HTTP endpoint and `cmfhir report` all go through `run_report`.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, Forbidden
from cmfhir.reports.config import ReportConfig
from cmfhir.store import Store
from cmfhir.store.reporting import MEASURE_SQL, PAGED, fetch_report

__all__ = [
    "ALL_ROWS",
    "REPORTS",
    "Page",
    "Period",
    "Report",
    "Scope",
    "parse_period",
    "reads",
    "run_report",
]

# The columns of each report's rows, in order (the CSV header).
REPORTS: dict[str, tuple[str, ...]] = {
    "caseload": ("kind", "care_manager", "acuity_tier", "reason", "count"),
    "contact-compliance": (
        "member",
        "month",
        "care_manager",
        "acuity_tier",
        "contacts",
        "in_person",
        "required",
        "compliant",
    ),
    "timeliness": (
        "member",
        "care_manager",
        "acuity_tier",
        "enrolled",
        "last_assessment",
        "current_assessment",
        "last_care_plan",
        "current_care_plan",
        "days_to_assessment",
        "days_to_care_plan",
    ),
    "gaps": ("rule", "gap_status", "care_manager", "count", "median_days_to_close"),
    "member-experience": ("care_manager", "item", "responses", "mean", "suppressed"),
    "tcm-encounters": (
        "member",
        "month",
        "first_contact_date",
        "care_manager",
        "acuity_tier",
        "hcpcs",
        "modifiers",
    ),
}

# The columns of the rows a MeasureReport is built from, for the reports that have rows of
# their own for it (reports/measure.py).
_MEASURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "contact-compliance": ("member", "care_manager", "acuity_tier", "compliant"),
    "tcm-encounters": ("care_manager", "acuity_tier", "count"),
}

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_GAP_SYSTEM = "https://cmfhir.org/fhir/CodeSystem/care-gap"
_GAP_STATUS = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
# The longest period one report covers.
_MAX_MONTHS = 36


@dataclass(frozen=True, slots=True)
class Period:
    first: date  # the first day of the first month
    last: date  # the first day of the last month

    @property
    def label(self) -> str:
        a, b = self.first.strftime("%Y-%m"), self.last.strftime("%Y-%m")
        return a if a == b else f"{a}..{b}"

    def end(self) -> date:
        """The first day after the period."""
        year, month = divmod(self.last.month, 12)
        return date(self.last.year + year, month + 1, 1)


@dataclass(frozen=True, slots=True)
class Scope:
    organization: str | None = None
    practitioner: str | None = None
    group: str | None = None
    patient: str | None = None

    def check(self) -> None:
        named = [(k, v) for k, v in self.items() if v is not None]
        if len(named) > 1:
            raise BadRequest(
                "A report is for one organization, practitioner or group, not several",
                expression=[k for k, _ in named],
            )
        for key, value in named:
            if not _ID.match(value):
                raise BadRequest(f"'{key}' must be a resource id", expression=[key])

    def items(self) -> list[tuple[str, str | None]]:
        return [
            ("organization", self.organization),
            ("practitioner", self.practitioner),
            ("group", self.group),
            ("patient", self.patient),
        ]

    @property
    def label(self) -> str:
        kind = {
            "organization": "Organization",
            "practitioner": "Practitioner",
            "group": "Group",
            "patient": "Patient",
        }
        for key, value in self.items():
            if value is not None:
                return f"{kind[key]}/{value}"
        return "all members"


@dataclass(frozen=True, slots=True)
class Page:
    """Which of a report's rows to return: `count` rows from the `offset`th (0 the first),
    in the report's order; `count` None is every row from `offset`. The summary always
    counts every row."""

    offset: int = 0
    count: int | None = None

    def take(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        end = None if self.count is None else self.offset + self.count
        return rows[self.offset : end]


ALL_ROWS = Page()


@dataclass(slots=True)
class Report:
    name: str
    scope: Scope
    period: Period
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    # Totals computed in SQL over every row (the reports in store/reporting.py's PAGED).
    totals: dict[str, Any] = field(default_factory=dict)
    # Further row sets (timeliness: the discharges).
    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # `rows` are this page of the report's rows (all of them by default), of `total_rows`.
    page: Page = ALL_ROWS
    total_rows: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "scope": self.scope.label,
            "period": self.period.label,
            "summary": self.summary,
            "page": {"offset": self.page.offset, "size": len(self.rows), "total": self.total_rows},
            "rows": self.rows,
            **self.parts,
        }


def _month(value: str, where: str) -> date:
    found = _MONTH.match(value.strip())
    if not found:
        raise BadRequest(f"'{value}' is not a month (YYYY-MM)", expression=[where])
    return date(int(found[1]), int(found[2]), 1)


def parse_period(value: str, where: str = "period") -> Period:
    """`2026-10` or `2026-07..2026-09`."""
    first, sep, last = value.partition("..")
    period = Period(_month(first, where), _month(last if sep else first, where))
    months = (period.last.year - period.first.year) * 12 + period.last.month - period.first.month
    if months < 0:
        raise BadRequest("The period ends before it starts", expression=[where])
    if months >= _MAX_MONTHS:
        raise BadRequest(f"A report covers at most {_MAX_MONTHS} months", expression=[where])
    return period


def _parameters(
    config: ReportConfig, scope: Scope, period: Period, page: Page = ALL_ROWS
) -> dict[str, Any]:
    return {
        "row_count": page.count,
        "row_offset": page.offset,
        "tz": config.timezone.value,
        "first_month": period.first,
        "last_month": period.last,
        "program_system": config.program.system,
        "program_code": config.program.code,
        "statuses": list(config.enrolled_statuses),
        "tier_url": config.acuity_tier_extension,
        "exclusion_url": config.exclusion_reason_extension,
        "organization": scope.organization,
        "practitioner": scope.practitioner,
        "group": scope.group,
        "patient": scope.patient,
        "medium_system": config.contact.medium_system,
        "qualifying": list(config.contact.qualifying),
        "in_person": list(config.contact.in_person),
        "requirements": json.dumps(config.required_contacts()),
        "waiver_system": config.billing.waiver_program.system,
        "waiver_code": config.billing.waiver_program.code,
        "assessment_url": config.assessment.questionnaire,
        "assessment_days": config.assessment.current_days,
        "care_plan_days": config.care_plan.current_days,
        "class_system": config.discharge.class_system,
        "classes": list(config.discharge.encounter_classes),
        "gap_system": _GAP_SYSTEM,
        "gap_status_url": _GAP_STATUS,
        "experience_url": config.experience.questionnaire,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(round(value, 2))
    if isinstance(value, float):
        return round(value, 2)
    return value


def _quantiles(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "median": None, "p90": None}
    ordered = sorted(values)
    p90 = (
        statistics.quantiles(ordered, n=10, method="inclusive")[-1]
        if len(ordered) > 1
        else ordered[0]
    )
    return {"count": len(ordered), "median": float(statistics.median(ordered)), "p90": float(p90)}


def _summarise(report: Report, config: ReportConfig) -> None:
    rows = report.rows
    if report.name == "contact-compliance":
        # Over every member-month, computed in SQL with the page (store/reporting.py).
        totals = report.totals
        report.summary = {
            "members": totals.get("members", 0),
            "members_compliant_every_month": totals.get("members_always", 0),
            "member_months": totals.get("member_months", 0),
            "member_months_compliant": totals.get("member_months_compliant", 0),
            "contacts": totals.get("contacts", 0),
            "in_person_share": (
                round(totals["in_person"] / contacts, 3)
                if (contacts := totals.get("contacts", 0))
                else None
            ),
        }
    elif report.name == "timeliness":
        discharges = report.parts.get("discharges", [])
        report.summary = {
            "members": len(rows),
            "current_assessment_share": _share(rows, "current_assessment"),
            "current_care_plan_share": _share(rows, "current_care_plan"),
            "days_enrollment_to_assessment": _quantiles(
                [r["days_to_assessment"] for r in rows if r["days_to_assessment"] is not None]
            ),
            "days_assessment_to_care_plan": _quantiles(
                [r["days_to_care_plan"] for r in rows if r["days_to_care_plan"] is not None]
            ),
            "discharges": len(discharges),
            "discharges_without_follow_up": sum(1 for d in discharges if d["follow_up"] is None),
            "days_discharge_to_follow_up": _quantiles(
                [d["days_to_follow_up"] for d in discharges if d["days_to_follow_up"] is not None]
            ),
        }
    elif report.name == "member-experience":
        smallest = config.experience.smallest_group
        for row in rows:
            row["suppressed"] = row["responses"] < smallest
            if row["suppressed"]:
                row["responses"] = None
                row["mean"] = None
        report.summary = {"smallest_group_shown": smallest}
    elif report.name == "tcm-encounters":
        for row in rows:
            waiver = row.pop("waiver")
            row["hcpcs"] = config.billing.hcpcs
            row["modifiers"] = " ".join(
                config.billing.waiver_modifiers if waiver else config.billing.modifiers
            )
        report.summary = {"billable_member_months": report.totals.get("member_months", 0)}
    elif report.name == "caseload":
        report.summary = {
            kind: sum(r["count"] for r in rows if r["kind"] == kind)
            for kind in (
                "members",
                "new",
                "transferred-in",
                "transferred-out",
                "closed",
                "excluded",
            )
        }
    elif report.name == "gaps":
        report.summary = {
            status: sum(r["count"] for r in rows if r["gap_status"] == status)
            for status in ("open-gap", "prospective-gap", "closed-gap")
        }


def _share(rows: list[dict[str, Any]], column: str) -> float | None:
    return round(sum(1 for r in rows if r[column]) / len(rows), 3) if rows else None


# The resource types each report reads, beside Patient (its population) and EpisodeOfCare
# (the enrollments every report starts from): a token must be allowed to search them all.
_READS: dict[str, tuple[str, ...]] = {
    "caseload": (),
    "contact-compliance": ("Communication",),
    "timeliness": ("QuestionnaireResponse", "CarePlan", "Encounter", "Communication"),
    "gaps": ("DetectedIssue",),
    "member-experience": ("QuestionnaireResponse",),
    "tcm-encounters": ("Communication",),
}


def reads(name: str, scope: Scope) -> tuple[str, ...]:
    """The resource types report `name` reads for `scope`."""
    group = ("Group",) if scope.group is not None else ()
    return ("Patient", "EpisodeOfCare", *_READS[name], *group)


def _allowed(principal: Principal, name: str, scope: Scope) -> None:
    """Reports are for staff and backend clients (docs/reports.md): a token acting for a
    member gets 403 (their own record is the FHIR API's). Any other principal must be
    allowed to search every type the report reads; what it counts is then narrowed, in the
    report's SQL, to what the principal may see (store/reporting.py)."""
    if principal.unrestricted:
        return
    if principal.kind != "system" and principal.practitioner is None:
        raise Forbidden(
            "Reports are for care-team staff (a Practitioner user) and backend clients; "
            "a member's own record is read through the FHIR API"
        )
    missing = [t for t in reads(name, scope) if not principal.allows(t, "s")]
    if missing:
        raise Forbidden(
            f"Report '{name}' reads {', '.join(missing)}: the token's scopes do not permit "
            "searching " + ("it" if len(missing) == 1 else "them")
        )


async def run_report(
    store: Store,
    config: ReportConfig,
    principal: Principal,
    name: str,
    scope: Scope,
    period: Period,
    page: Page = ALL_ROWS,
    measure: bool = False,
) -> Report:
    """Report `name` for `scope` and `period`, counting what `principal` may see: its
    summary over every row, and the rows of `page` (every row by default). `measure`: for
    a report whose MeasureReport has rows of its own (store/reporting.py's MEASURE_SQL),
    those rows instead (`_MEASURE_COLUMNS`), without a summary."""
    if name not in REPORTS:
        known = ", ".join(REPORTS)
        raise BadRequest(f"There is no report '{name}' (there are: {known})", expression=[name])
    scope.check()
    _allowed(principal, name, scope)
    async with store.snapshot(principal) as repo:
        found = await fetch_report(
            repo,
            name,
            _parameters(config, scope, period, page),
            reads(name, scope),
            measure and name in MEASURE_SQL,
        )
    if measure and name in MEASURE_SQL:
        rows = [{k: _plain(v) for k, v in row.items()} for row in found["rows"]]
        return Report(name, scope, period, _MEASURE_COLUMNS[name], rows, total_rows=len(rows))
    totals = found.pop("rows_totals", None)
    rows = [{k: _plain(v) for k, v in row.items()} for row in found.pop("rows")]
    parts = {k: [{c: _plain(v) for c, v in r.items()} for r in rs] for k, rs in found.items()}
    if name in PAGED:
        # The SQL returned the page, and the totals over every row.
        counted: dict[str, Any] = totals[0] if totals else {}
        report = Report(name, scope, period, REPORTS[name], rows, totals=counted, parts=parts)
        report.page, report.total_rows = page, int(counted.get("member_months", 0))
        _summarise(report, config)
        return report
    # The rows are few (grouped counts, or one per member): all of them are summarised,
    # then the page is taken.
    report = Report(name, scope, period, REPORTS[name], rows, parts=parts)
    _summarise(report, config)
    report.page, report.total_rows = page, len(report.rows)
    report.rows = page.take(report.rows)
    return report
