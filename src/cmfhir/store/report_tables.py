"""The table the reports keep beside the resources (store/reporting.py): each Communication's
contact facts, written by a trigger on `resource` in the writing transaction (migration
0012_report_totals), so that a report reads one narrow row per contact, never the resource."""

from __future__ import annotations

from sqlalchemy import ARRAY, BigInteger, Column, DateTime, Index, Table, Text

from cmfhir.store.schema import metadata

__all__ = ["report_contact"]

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
