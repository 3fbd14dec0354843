"""report_totals: each Communication's contact facts for the reports

`report_contact` holds, per current Communication with a `sent` and a local Patient
`subject`, the member, the instant sent, the status and the medium codings: the
care-management reports (store/reporting.py) read one narrow row per contact instead of
joining four index tables. A trigger on `resource` keeps it in the writing transaction
(create, update, delete, `$meta` changes), so a report sees exactly the committed
Communications; the upgrade fills it from the stored ones.

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

_SYNC = """
CREATE FUNCTION report_contact_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM report_contact WHERE rid = OLD.rid;
  END IF;
  IF TG_OP <> 'DELETE' AND NOT NEW.deleted AND NEW.content IS NOT NULL THEN
    PERFORM report_contact_put(NEW.rid, NEW.content);
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
    op.execute(_PUT)
    op.execute(_SYNC)
    op.execute(
        "CREATE TRIGGER report_contact_written AFTER INSERT OR UPDATE ON resource"
        " FOR EACH ROW WHEN (NEW.resource_type = 'Communication')"
        " EXECUTE FUNCTION report_contact_sync()"
    )
    op.execute(
        "CREATE TRIGGER report_contact_removed AFTER DELETE ON resource"
        " FOR EACH ROW WHEN (OLD.resource_type = 'Communication')"
        " EXECUTE FUNCTION report_contact_sync()"
    )
    # Filling it reads every stored Communication once: a minute or so at 300,000.
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute(
        "SELECT report_contact_put(rid, content) FROM resource"
        " WHERE resource_type = 'Communication' AND NOT deleted AND content IS NOT NULL"
    )
    # The planner's figures for the filled table now, not at autovacuum's next pass.
    op.execute("ANALYZE report_contact")


def downgrade() -> None:
    op.execute("DROP TRIGGER report_contact_removed ON resource")
    op.execute("DROP TRIGGER report_contact_written ON resource")
    op.execute("DROP FUNCTION report_contact_sync()")
    op.execute("DROP FUNCTION report_contact_put(bigint, jsonb)")
    op.drop_index(op.f("ix_report_contact_member_sent"), table_name="report_contact")
    op.drop_table("report_contact")
