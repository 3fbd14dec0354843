"""The tables the reports keep beside the resources (store/reporting.py): each
Communication's contact facts and each DetectedIssue's gap facts, written by a trigger on
`resource` in the writing transaction (migration 0012_report_totals), so that a report
reads one narrow row per contact or gap, never the resource."""

from __future__ import annotations

from sqlalchemy import ARRAY, BigInteger, Column, DateTime, Index, Table, Text

from cmfhir.store.schema import metadata

__all__ = ["report_contact", "report_issue"]

# One row per current, not deleted Communication with a `sent` and a `subject` that is a
# local Patient: `member` that Patient's id, `sent` the instant (the start of its precision,
# as idx_date's `low`), `status`, and `mediums` every medium coding as 'system|code'.
report_contact = Table(
    "report_contact",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("member", Text, nullable=False),
    Column("sent", DateTime(timezone=True), nullable=False),
    Column("status", Text),
    Column("mediums", ARRAY(Text), nullable=False),
    Index(None, "member", "sent"),
)

# One row per current, not deleted DetectedIssue with an `identifiedDateTime` and a
# `patient` that is a local Patient: `codes` its `code` codings ('system|code'),
# `modifiers` each modifier extension's first code ('url|code'), both in document order,
# and `identified` and `mitigated` (each mitigation's date) as written.
report_issue = Table(
    "report_issue",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("member", Text, nullable=False),
    Column("codes", ARRAY(Text), nullable=False),
    Column("modifiers", ARRAY(Text), nullable=False),
    Column("identified", Text, nullable=False),
    Column("mitigated", ARRAY(Text), nullable=False),
    Index(None, "member"),
)
