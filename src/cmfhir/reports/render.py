"""A report as CSV (for spreadsheets and claims submission) or as a table readable in a
terminal."""

from __future__ import annotations

import csv
import io
from typing import Any

from cmfhir.reports.run import Report

__all__ = ["as_csv", "as_table"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([_cell(row.get(column)) for column in report.columns])
    return out.getvalue()


def _summary_lines(summary: dict[str, Any], indent: str = "") -> list[str]:
    lines = []
    for key, value in summary.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(f"{indent}{label}:")
            lines.extend(_summary_lines(value, indent + "  "))
        else:
            lines.append(f"{indent}{label}: {_cell(value) or '-'}")
    return lines


def as_table(report: Report) -> str:
    """Columns padded to their widest cell, a title line and the summary under it."""
    header = [c.replace("_", " ") for c in report.columns]
    cells = [[_cell(row.get(c)) for c in report.columns] for row in report.rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    title = f"{report.name} — {report.scope.label}, {report.period.label}"
    lines = [title, "=" * len(title)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    if not cells:
        lines.append("(no rows)")
    lines.append("")
    lines.extend(_summary_lines(report.summary))
    return "\n".join(lines) + "\n"
