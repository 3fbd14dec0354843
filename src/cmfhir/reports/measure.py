"""A report as a FHIR MeasureReport (`Measure/[id]/$evaluate-measure`): populations and
their counts, a score where the report has one, stratified by care manager and acuity tier.

`contact-compliance`: initial-population = members with an active enrollment in the period;
denominator = the same; numerator = members whose qualifying contacts met their tier's
requirement in every month of the period they were enrolled. The other reports publish their
counts the same way (docs/reports.md lists each group).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from cmfhir.reports.run import Report

__all__ = ["measure_report"]

_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
_BASE = "https://cmfhir.org/fhir"
_REPORT_GROUP = f"{_BASE}/CodeSystem/report-group"
_STRATIFIER = f"{_BASE}/CodeSystem/report-stratifier"

Members = set[str]


def _concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], "text": code}


class _Builder:
    def __init__(self, report: Report, report_type: str) -> None:
        self.report = report
        self.report_type = report_type
        self.lists: list[dict[str, Any]] = []

    def population(self, code: str, members: Iterable[str] | int) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": _concept(_POPULATION, code)}
        if isinstance(members, int):
            entry["count"] = members
            return entry
        chosen = sorted(set(members))
        entry["count"] = len(chosen)
        if self.report_type == "subject-list":
            list_id = f"list-{len(self.lists) + 1}"
            self.lists.append(
                {
                    "resourceType": "List",
                    "id": list_id,
                    "status": "current",
                    "mode": "snapshot",
                    "entry": [{"item": {"reference": f"Patient/{m}"}} for m in chosen],
                }
            )
            entry["subjectResults"] = {"reference": f"#{list_id}"}
        return entry

    def group(
        self,
        code: str,
        populations: list[tuple[str, Any]],
        score: float | None = None,
        stratifiers: list[tuple[str, dict[str, list[tuple[str, Any]]], dict[str, float]]]
        | None = None,
    ) -> dict[str, Any]:
        group: dict[str, Any] = {
            "code": _concept(_REPORT_GROUP, code),
            "population": [self.population(c, m) for c, m in populations],
        }
        if score is not None:
            group["measureScore"] = {"value": round(score, 4)}
        out = []
        for name, strata, scores in stratifiers or []:
            out.append(
                {
                    "code": [_concept(_STRATIFIER, name)],
                    "stratum": [
                        {
                            "value": {"text": value or "none"},
                            "population": [self.population(c, m) for c, m in pops],
                            **(
                                {"measureScore": {"value": round(scores[value], 4)}}
                                if value in scores
                                else {}
                            ),
                        }
                        for value, pops in sorted(strata.items(), key=lambda kv: kv[0] or "")
                    ],
                }
            )
        if out:
            group["stratifier"] = out
        return group


def _by(
    rows: list[dict[str, Any]], key: str, populations: Callable[[list[dict[str, Any]]], Any]
) -> dict[str, list[tuple[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row.get(key) or ""].append(row)
    return {value: populations(members) for value, members in grouped.items()}


def _compliance(b: _Builder) -> list[dict[str, Any]]:
    # One row per member with their last month's care manager and tier, and whether they
    # met the requirement every month (from the report's member-month rows in order, or
    # its rows per member: run_report(measure=True)).
    members: dict[str, dict[str, Any]] = {}
    for row in b.report.rows:
        seen = members.setdefault(row["member"], {"member": row["member"], "compliant": True})
        seen.update(care_manager=row["care_manager"], acuity_tier=row["acuity_tier"])
        seen["compliant"] = seen["compliant"] and bool(row["compliant"])
    rows = list(members.values())

    def pops(chosen: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        everyone = [r["member"] for r in chosen]
        return [
            ("initial-population", everyone),
            ("denominator", everyone),
            ("numerator", [r["member"] for r in chosen if r["compliant"]]),
        ]

    def score(chosen: list[dict[str, Any]]) -> float | None:
        return sum(r["compliant"] for r in chosen) / len(chosen) if chosen else None

    def scores(key: str) -> dict[str, float]:
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            grouped[r.get(key) or ""].append(r)
        return {k: s for k, v in grouped.items() if (s := score(v)) is not None}

    return [
        b.group(
            "contact-compliance",
            pops(rows),
            score(rows),
            [
                ("care-manager", _by(rows, "care_manager", pops), scores("care_manager")),
                ("acuity-tier", _by(rows, "acuity_tier", pops), scores("acuity_tier")),
            ],
        )
    ]


def _counted(
    b: _Builder, rows: list[dict[str, Any]], group: str, keys: tuple[str, ...]
) -> dict[str, Any]:
    def pops(chosen: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [("initial-population", sum(int(r["count"]) for r in chosen))]

    return b.group(
        group, pops(rows), None, [(k.replace("_", "-"), _by(rows, k, pops), {}) for k in keys]
    )


def _caseload(b: _Builder) -> list[dict[str, Any]]:
    rows = b.report.rows
    groups = [
        _counted(
            b,
            [r for r in rows if r["kind"] == "members"],
            "members",
            ("care_manager", "acuity_tier"),
        )
    ]
    for kind in ("new", "transferred-in", "transferred-out", "closed"):
        groups.append(_counted(b, [r for r in rows if r["kind"] == kind], kind, ()))
    groups.append(
        _counted(b, [r for r in rows if r["kind"] == "excluded"], "excluded", ("reason",))
    )
    return groups


def _timeliness(b: _Builder) -> list[dict[str, Any]]:
    rows = b.report.rows
    everyone = [r["member"] for r in rows]
    groups = []
    for column in ("current_assessment", "current_care_plan"):
        met = [r["member"] for r in rows if r[column]]
        groups.append(
            b.group(
                column.replace("_", "-"),
                [("initial-population", everyone), ("denominator", everyone), ("numerator", met)],
                len(met) / len(everyone) if everyone else None,
            )
        )
    discharges = b.report.parts.get("discharges", [])
    followed = sum(1 for d in discharges if d["follow_up"] is not None)
    groups.append(
        b.group(
            "discharge-follow-up",
            [
                ("initial-population", len(discharges)),
                ("denominator", len(discharges)),
                ("numerator", followed),
            ],
            followed / len(discharges) if discharges else None,
        )
    )
    return groups


def _gaps(b: _Builder) -> list[dict[str, Any]]:
    rows = b.report.rows
    return [
        _counted(
            b, [r for r in rows if r["gap_status"] == status], status, ("rule", "care_manager")
        )
        for status in ("open-gap", "prospective-gap", "closed-gap")
    ]


def _experience(b: _Builder) -> list[dict[str, Any]]:
    groups = []
    items = sorted({r["item"] for r in b.report.rows})
    for item in items:
        rows = [r for r in b.report.rows if r["item"] == item and not r["suppressed"]]
        strata = {r["care_manager"] or "": [("initial-population", r["responses"])] for r in rows}
        scores = {r["care_manager"] or "": r["mean"] for r in rows if r["mean"] is not None}
        groups.append(
            b.group(
                item,
                [("initial-population", sum(r["responses"] for r in rows))],
                None,
                [("care-manager", strata, scores)],
            )
        )
    return groups


def _encounters(b: _Builder) -> list[dict[str, Any]]:
    # Each member-month counts one; the report's rows for a MeasureReport
    # (run_report(measure=True)) are counts by care manager and tier.
    rows = [{**r, "count": r.get("count", 1)} for r in b.report.rows]
    return [_counted(b, rows, "billable-member-months", ("care_manager", "acuity_tier"))]


_GROUPS: dict[str, Callable[[_Builder], list[dict[str, Any]]]] = {
    "contact-compliance": _compliance,
    "caseload": _caseload,
    "timeliness": _timeliness,
    "gaps": _gaps,
    "member-experience": _experience,
    "tcm-encounters": _encounters,
}

# R4's reportType codes and the MeasureReport.type each gives.
REPORT_TYPES = {
    "summary": "summary",
    "population": "summary",
    "subject-list": "subject-list",
    "individual": "individual",
    "subject": "individual",
}


def measure_report(report: Report, measure_url: str, report_type: str) -> dict[str, Any]:
    kind = REPORT_TYPES[report_type]
    builder = _Builder(report, kind)
    groups = _GROUPS[report.name](builder)
    end = report.period.end()
    resource: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": kind,
        "measure": measure_url,
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "period": {
            "start": report.period.first.isoformat(),
            "end": end.fromordinal(end.toordinal() - 1).isoformat(),
        },
        "group": groups,
    }
    if report.scope.patient is not None:
        resource["subject"] = {"reference": f"Patient/{report.scope.patient}"}
    elif report.scope.group is not None:
        resource["subject"] = {"reference": f"Group/{report.scope.group}"}
    if report.scope.organization is not None:
        resource["reporter"] = {"reference": f"Organization/{report.scope.organization}"}
    elif report.scope.practitioner is not None:
        resource["reporter"] = {"reference": f"Practitioner/{report.scope.practitioner}"}
    if builder.lists:
        resource["contained"] = builder.lists
    return resource
