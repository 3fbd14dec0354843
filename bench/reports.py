"""The report scenario: every care-management report for the agency (all generated
members) over the caseload's last quarter and last year, over HTTP, each run a few times.
Target (issue #15): each report under 2 s for a 10,000-member organization."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx

from bench.caseload import AS_OF

__all__ = ["REPORT_NAMES", "run_reports"]

REPORT_NAMES = (
    "caseload",
    "contact-compliance",
    "timeliness",
    "gaps",
    "member-experience",
    "tcm-encounters",
)
TARGET_SECONDS = 2.0


def _periods() -> dict[str, str]:
    last = AS_OF.strftime("%Y-%m")
    quarter_start = (AS_OF.month - 3) % 12 + 1
    quarter_year = AS_OF.year - (1 if AS_OF.month <= 2 else 0)
    year_start = AS_OF.month % 12 + 1
    year_year = AS_OF.year - (0 if AS_OF.month == 12 else 1)
    return {
        "quarter": f"{quarter_year}-{quarter_start:02d}..{last}",
        "year": f"{year_year}-{year_start:02d}..{last}",
    }


def run_reports(root_url: str, organization: str, repeats: int = 3) -> list[dict[str, Any]]:
    """`root_url` is the server's root (not /fhir). One row per report and period: the
    median and slowest of `repeats` runs, the rows returned, and whether it met the target."""
    rows = []
    with httpx.Client(base_url=root_url, timeout=120) as http:
        for label, period in _periods().items():
            for name in REPORT_NAMES:
                seconds = []
                count = 0
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = http.get(
                        f"/reports/{name}", params={"organization": organization, "period": period}
                    )
                    seconds.append(time.perf_counter() - started)
                    response.raise_for_status()
                    count = len(response.json()["rows"])
                rows.append(
                    {
                        "report": name,
                        "period": f"{label} ({period})",
                        "rows": count,
                        "median_s": round(statistics.median(seconds), 3),
                        "max_s": round(max(seconds), 3),
                        "meets_target": max(seconds) <= TARGET_SECONDS,
                    }
                )
    return rows
