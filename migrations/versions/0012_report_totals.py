"""report_totals: each Communication's contact facts and each DetectedIssue's gap facts

`report_contact` holds, per current Communication with a `sent` and a local Patient
`subject`, the member, the instant sent, the status and the medium codings;
`report_issue`, per current DetectedIssue with an `identifiedDateTime` and a local Patient,
its codes, modifier extension codes and dates. The care-management reports
(store/reporting.py) read one narrow row per contact or gap instead of the resource and its
JSON. A trigger on `resource` keeps them in the writing transaction (create, update,
delete, `$meta` changes), so a report sees exactly what is committed; the upgrade fills
them from the stored resources.

Revision ID: 0012_report_totals
Revises: 0011_import_job
Create Date: 2026-12-01 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0012_report_totals"
down_revision: str | None = "0011_import_job"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The row of one Communication (nothing when it has no `sent` or no local Patient
# subject). `sent` as idx_date reads it: a date or partial date starts its period in UTC,
# a dateTime is the instant it names. A value PostgreSQL cannot read is left out rather
# than failing the write (validation has already accepted the resource).
_PUT = r"""
CREATE FUNCTION report_contact_put(r_rid bigint, r_content jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  v_sent text := r_content->>'sent';
  v_member text := substring(r_content->'subject'->>'reference'
                           FROM '^Patient/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$');
  medium jsonb := r_content->'medium';
  v_at timestamptz;
BEGIN
  IF v_sent IS NULL OR v_member IS NULL THEN
    RETURN;
  END IF;
  BEGIN
    v_at := CASE
      WHEN v_sent ~ '^\d{4}$' THEN (v_sent || '-01-01')::timestamp AT TIME ZONE 'UTC'
      WHEN v_sent ~ '^\d{4}-\d{2}$' THEN (v_sent || '-01')::timestamp AT TIME ZONE 'UTC'
      WHEN v_sent ~ '^\d{4}-\d{2}-\d{2}$' THEN v_sent::timestamp AT TIME ZONE 'UTC'
      WHEN v_sent ~ '(Z|[+-]\d{2}:\d{2})$' THEN v_sent::timestamptz
      ELSE v_sent::timestamp AT TIME ZONE 'UTC'
    END;
  EXCEPTION WHEN data_exception THEN
    RETURN;
  END;
  INSERT INTO report_contact (rid, member, sent, status, mediums)
  VALUES (
    r_rid, v_member, v_at, r_content->>'status',
    ARRAY(
      SELECT DISTINCT COALESCE(c->>'system', '') || '|' || (c->>'code')
      FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(medium) = 'array' THEN medium ELSE '[]' END) m,
           jsonb_array_elements(
             CASE WHEN jsonb_typeof(m->'coding') = 'array' THEN m->'coding' ELSE '[]' END) c
      WHERE c->>'code' IS NOT NULL));
END $$
"""

# A DetectedIssue's row (nothing without an `identifiedDateTime` or a local Patient):
# the member, the `code` codings and the modifier extensions' first codes in document
# order ('system|code', 'url|code'), and the dates as written (the report reads them in
# its time zone).
_ISSUE = r"""
CREATE FUNCTION report_issue_put(r_rid bigint, r_content jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  v_member text := substring(r_content->'patient'->>'reference'
                             FROM '^Patient/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$');
  v_identified text := r_content->>'identifiedDateTime';
  v_codes jsonb := r_content->'code'->'coding';
  v_modifiers jsonb := r_content->'modifierExtension';
  v_mitigation jsonb := r_content->'mitigation';
BEGIN
  IF v_member IS NULL OR v_identified IS NULL THEN
    RETURN;
  END IF;
  INSERT INTO report_issue (rid, member, codes, modifiers, identified, mitigated)
  VALUES (
    r_rid, v_member,
    ARRAY(
      SELECT COALESCE(c->>'system', '') || '|' || (c->>'code')
      FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(v_codes) = 'array' THEN v_codes ELSE '[]' END)
           WITH ORDINALITY AS e(c, n)
      WHERE c->>'code' IS NOT NULL ORDER BY n),
    ARRAY(
      SELECT (x->>'url') || '|' || (x->'valueCodeableConcept'->'coding'->0->>'code')
      FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(v_modifiers) = 'array' THEN v_modifiers ELSE '[]' END)
           WITH ORDINALITY AS e(x, n)
      WHERE x->>'url' IS NOT NULL
        AND x->'valueCodeableConcept'->'coding'->0->>'code' IS NOT NULL
      ORDER BY n),
    v_identified,
    ARRAY(
      SELECT g->>'date'
      FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(v_mitigation) = 'array' THEN v_mitigation ELSE '[]' END) g
      WHERE g->>'date' IS NOT NULL));
END $$
"""

_SYNC = """
CREATE FUNCTION report_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    IF OLD.resource_type = 'Communication' THEN
      DELETE FROM report_contact WHERE rid = OLD.rid;
    ELSE
      DELETE FROM report_issue WHERE rid = OLD.rid;
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' AND NOT NEW.deleted AND NEW.content IS NOT NULL THEN
    IF NEW.resource_type = 'Communication' THEN
      PERFORM report_contact_put(NEW.rid, NEW.content);
    ELSE
      PERFORM report_issue_put(NEW.rid, NEW.content);
    END IF;
  END IF;
  RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "report_contact",
        sa.Column("rid", sa.BigInteger(), nullable=False),
        sa.Column("member", sa.Text(), nullable=False),
        sa.Column("sent", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text()),
        sa.Column("mediums", ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("rid", name=op.f("pk_report_contact")),
    )
    op.create_index(op.f("ix_report_contact_member_sent"), "report_contact", ["member", "sent"])
    op.create_table(
        "report_issue",
        sa.Column("rid", sa.BigInteger(), nullable=False),
        sa.Column("member", sa.Text(), nullable=False),
        sa.Column("codes", ARRAY(sa.Text()), nullable=False),
        sa.Column("modifiers", ARRAY(sa.Text()), nullable=False),
        sa.Column("identified", sa.Text(), nullable=False),
        sa.Column("mitigated", ARRAY(sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("rid", name=op.f("pk_report_issue")),
    )
    op.create_index(op.f("ix_report_issue_member"), "report_issue", ["member"])
    op.execute(_PUT)
    op.execute(_ISSUE)
    op.execute(_SYNC)
    op.execute(
        "CREATE TRIGGER report_contact_written AFTER INSERT OR UPDATE ON resource"
        " FOR EACH ROW WHEN (NEW.resource_type IN ('Communication', 'DetectedIssue'))"
        " EXECUTE FUNCTION report_sync()"
    )
    op.execute(
        "CREATE TRIGGER report_contact_removed AFTER DELETE ON resource"
        " FOR EACH ROW WHEN (OLD.resource_type IN ('Communication', 'DetectedIssue'))"
        " EXECUTE FUNCTION report_sync()"
    )
    # Filling it reads every stored Communication once: a minute or so at 300,000.
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute(
        "SELECT report_contact_put(rid, content) FROM resource"
        " WHERE resource_type = 'Communication' AND NOT deleted AND content IS NOT NULL"
    )
    op.execute(
        "SELECT report_issue_put(rid, content) FROM resource"
        " WHERE resource_type = 'DetectedIssue' AND NOT deleted AND content IS NOT NULL"
    )
    # The planner's figures for the filled tables now, not at autovacuum's next pass.
    op.execute("ANALYZE report_contact")
    op.execute("ANALYZE report_issue")


def downgrade() -> None:
    op.execute("DROP TRIGGER report_contact_removed ON resource")
    op.execute("DROP TRIGGER report_contact_written ON resource")
    op.execute("DROP FUNCTION report_sync()")
    op.execute("DROP FUNCTION report_issue_put(bigint, jsonb)")
    op.execute("DROP FUNCTION report_contact_put(bigint, jsonb)")
    op.drop_index(op.f("ix_report_issue_member"), table_name="report_issue")
    op.drop_table("report_issue")
    op.drop_index(op.f("ix_report_contact_member_sent"), table_name="report_contact")
    op.drop_table("report_contact")
