"""The tables the reports keep beside the resources (store/reporting.py): each
Communication's contact facts and each DetectedIssue's gap facts (migration
0012_report_totals), and each QuestionnaireResponse's, CarePlan's and Encounter's dates
and each EpisodeOfCare version's enrollment facts (0018_report_records), written by
triggers on `resource` and `resource_history` in the writing transaction, so that a report
reads one narrow row per contact, gap, response, care plan, encounter or enrollment
version, never the resource or the stored version."""

from __future__ import annotations

from sqlalchemy import ARRAY, BigInteger, Column, DateTime, Index, Integer, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from cmfhir.store.schema import metadata

__all__ = ["report_contact", "report_enrollment", "report_issue", "report_record"]

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

# One row per current, not deleted QuestionnaireResponse, CarePlan and Encounter with a
# Patient (`resource.patient_id`): `kind` its type, its `id`, `member` that Patient's id,
# `status`, `questionnaire` (a response's, without its version), `codes` (an encounter's
# class codings, 'system|code') and `at` the date as written (a response's `authored`, a
# care plan's `created` else `period.start`, an encounter's `period.end`).
report_record = Table(
    "report_record",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("member", Text, nullable=False),
    Column("status", Text),
    Column("questionnaire", Text),
    Column("codes", ARRAY(Text), nullable=False),
    Column("at", Text),
    Index(None, "kind", "member"),
)

# One row per stored EpisodeOfCare version with content (resource_history): `recorded` its
# lastUpdated, `member` its patient_id, and as written its `status`, careManager and
# managingOrganization references, `extension` array and `period` start and end.
report_enrollment = Table(
    "report_enrollment",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("member", Text),
    Column("status", Text),
    Column("care_manager", Text),
    Column("organization", Text),
    Column("extension", JSONB),
    Column("period_start", Text),
    Column("period_end", Text),
)
