"""report_records: the facts the reports read of each QuestionnaireResponse, CarePlan and
Encounter, and of each EpisodeOfCare version

`report_record` holds, per current QuestionnaireResponse, CarePlan and Encounter with a
Patient (`resource.patient_id`), its id, member, status, the Questionnaire it answers
(without a version), its Encounter class codings and its date as written: a response's
`authored`, a care plan's `created` (else `period.start`), an encounter's `period.end`. The
reports (store/reporting.py) select the assessments, care plans, discharges and
satisfaction answers of their members from these narrow rows instead of looking up and
parsing every such resource; the member-experience report then reads the content of only
its period's responses. A trigger on `resource` keeps the table in the writing transaction
(create, update, delete), as `0012_report_totals` does for contacts and care gaps.

`report_enrollment` holds, per stored EpisodeOfCare version with content, when it was
recorded, its member and what the reports read of it (status, care manager, managing
organization, extensions, period): every report's member-months are built from these
narrow rows instead of a lookup and parse of every enrollment version. A trigger on
`resource_history` keeps it. The upgrade fills both tables from the stored resources and
versions.

Revision ID: 0018_report_records
Revises: 0017_stored_under
Create Date: 2026-12-01 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0018_report_records"
down_revision: str | None = "0017_stored_under"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TYPES = "('QuestionnaireResponse', 'CarePlan', 'Encounter')"

# The row of one resource (nothing without a Patient). `at` is the date as written (the
# report reads it in its time zone); `codes` an Encounter's `class` coding(s) as
# 'system|code'.
_PUT = r"""
CREATE FUNCTION report_record_put(r_rid bigint, r_type text, r_id text, r_member text,
                                  r_content jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  v_class jsonb := r_content->'class';
BEGIN
  IF r_member IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO report_record (rid, kind, id, member, status, questionnaire, codes, at)
  VALUES (
    r_rid, r_type, r_id, r_member, r_content->>'status',
    CASE WHEN r_type = 'QuestionnaireResponse'
         THEN split_part(r_content->>'questionnaire', '|', 1) END,
    CASE WHEN r_type = 'Encounter' THEN ARRAY(
      SELECT COALESCE(c->>'system', '') || '|' || (c->>'code')
      FROM jsonb_array_elements(CASE jsonb_typeof(v_class)
                                  WHEN 'array' THEN v_class
                                  WHEN 'object' THEN jsonb_build_array(v_class)
                                  ELSE '[]' END) c
      WHERE c->>'code' IS NOT NULL)
    ELSE '{}' END,
    CASE r_type
      WHEN 'QuestionnaireResponse' THEN r_content->>'authored'
      WHEN 'CarePlan' THEN COALESCE(r_content->>'created', r_content->'period'->>'start')
      ELSE r_content->'period'->>'end' END);
END $$
"""

_SYNC = """
CREATE FUNCTION report_record_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM report_record WHERE rid = OLD.rid;
  END IF;
  IF TG_OP <> 'DELETE' AND NOT NEW.deleted AND NEW.content IS NOT NULL THEN
    PERFORM report_record_put(NEW.rid, NEW.resource_type, NEW.id, NEW.patient_id, NEW.content);
  END IF;
  RETURN NULL;
END $$
"""


# A stored EpisodeOfCare version's row (nothing for a deletion's version, which has no
# content).
_ENROLLMENT = """
CREATE FUNCTION report_enrollment_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM report_enrollment WHERE rid = OLD.rid AND version = OLD.version;
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.content IS NOT NULL THEN
    INSERT INTO report_enrollment (rid, version, recorded, member, status, care_manager,
                                   organization, extension, period_start, period_end)
    VALUES (NEW.rid, NEW.version, NEW.last_updated, NEW.patient_id, NEW.content->>'status',
            NEW.content->'careManager'->>'reference',
            NEW.content->'managingOrganization'->>'reference',
            NEW.content->'extension', NEW.content->'period'->>'start',
            NEW.content->'period'->>'end');
  END IF;
  RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "report_record",
        sa.Column("rid", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("member", sa.Text(), nullable=False),
        sa.Column("status", sa.Text()),
        sa.Column("questionnaire", sa.Text()),
        sa.Column("codes", ARRAY(sa.Text()), nullable=False),
        sa.Column("at", sa.Text()),
        sa.PrimaryKeyConstraint("rid", name=op.f("pk_report_record")),
    )
    op.create_index(op.f("ix_report_record_kind_member"), "report_record", ["kind", "member"])
    op.execute(_PUT)
    op.execute(_SYNC)
    op.execute(
        "CREATE TRIGGER report_record_written AFTER INSERT OR UPDATE ON resource"
        f" FOR EACH ROW WHEN (NEW.resource_type IN {_TYPES})"
        " EXECUTE FUNCTION report_record_sync()"
    )
    op.execute(
        "CREATE TRIGGER report_record_removed AFTER DELETE ON resource"
        f" FOR EACH ROW WHEN (OLD.resource_type IN {_TYPES})"
        " EXECUTE FUNCTION report_record_sync()"
    )
    # Filling it reads every stored response, care plan and encounter once.
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute(
        "SELECT report_record_put(rid, resource_type, id, patient_id, content) FROM resource"
        f" WHERE resource_type IN {_TYPES} AND NOT deleted AND content IS NOT NULL"
    )
    op.execute("ANALYZE report_record")

    op.create_table(
        "report_enrollment",
        sa.Column("rid", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("member", sa.Text()),
        sa.Column("status", sa.Text()),
        sa.Column("care_manager", sa.Text()),
        sa.Column("organization", sa.Text()),
        sa.Column("extension", JSONB()),
        sa.Column("period_start", sa.Text()),
        sa.Column("period_end", sa.Text()),
        sa.PrimaryKeyConstraint("rid", "version", name=op.f("pk_report_enrollment")),
    )
    op.execute(_ENROLLMENT)
    op.execute(
        "CREATE TRIGGER report_enrollment_written AFTER INSERT OR UPDATE ON resource_history"
        " FOR EACH ROW WHEN (NEW.resource_type = 'EpisodeOfCare')"
        " EXECUTE FUNCTION report_enrollment_sync()"
    )
    op.execute(
        "CREATE TRIGGER report_enrollment_removed AFTER DELETE ON resource_history"
        " FOR EACH ROW WHEN (OLD.resource_type = 'EpisodeOfCare')"
        " EXECUTE FUNCTION report_enrollment_sync()"
    )
    op.execute(
        "INSERT INTO report_enrollment (rid, version, recorded, member, status, care_manager,"
        " organization, extension, period_start, period_end)"
        " SELECT rid, version, last_updated, patient_id, content->>'status',"
        " content->'careManager'->>'reference', content->'managingOrganization'->>'reference',"
        " content->'extension', content->'period'->>'start', content->'period'->>'end'"
        " FROM resource_history WHERE resource_type = 'EpisodeOfCare' AND content IS NOT NULL"
    )
    op.execute("ANALYZE report_enrollment")


def downgrade() -> None:
    op.execute("DROP TRIGGER report_enrollment_removed ON resource_history")
    op.execute("DROP TRIGGER report_enrollment_written ON resource_history")
    op.execute("DROP FUNCTION report_enrollment_sync()")
    op.drop_table("report_enrollment")
    op.execute("DROP TRIGGER report_record_removed ON resource")
    op.execute("DROP TRIGGER report_record_written ON resource")
    op.execute("DROP FUNCTION report_record_sync()")
    op.execute("DROP FUNCTION report_record_put(bigint, text, text, text, jsonb)")
    op.drop_index(op.f("ix_report_record_kind_member"), table_name="report_record")
    op.drop_table("report_record")
