"""audit events in a table of their own

`audit_event`: one row per AuditEvent (its JSON, compartment, recorded instant, the index
records of its search parameters as JSON, and the ids it references under `patient`,
`agent` and `entity` and its `site`, behind a GIN index with a pending list), where the
generic store spent a current row, a history row, an outbox event and a dozen index rows
on each (src/cmfhir/store/audit_events.py). The AuditEvents already stored move there,
with the index records they had; their rows leave `resource`, `resource_history`, the
index tables and the outbox. Their rids are kept: `audit_event.rid` is drawn from
`resource`'s sequence, so an event's rid never names a resource row.

Revision ID: 0016_audit_event
Revises: 0012_report_totals
Create Date: 2026-12-01 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016_audit_event"
down_revision: str | None = "0012_report_totals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FAMILIES = {
    "idx_token": ("token", "param, system, code, text"),
    "idx_string": ("string", "param, value, exact"),
    "idx_date": ("date", "param, low, high"),
    "idx_number": ("number", "param, value, low, high"),
    "idx_quantity": ("quantity", "param, system, code, unit, value, low, high"),
    "idx_reference": ("reference", "param, target_type, target_id, url"),
    "idx_uri": ("uri", "param, uri"),
}


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column(
            "rid",
            sa.BigInteger(),
            server_default=sa.text("nextval(pg_get_serial_sequence('resource', 'rid'))"),
            nullable=False,
        ),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=True),
        sa.Column("patient_id", sa.Text(), nullable=True),
        sa.Column("terms", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("idx", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("rid", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_event_id")),
    )
    op.create_index("ix_audit_event_recorded_rid", "audit_event", ["recorded", "rid"])
    op.create_index(
        "ix_audit_event_terms",
        "audit_event",
        ["terms"],
        postgresql_using="gin",
        postgresql_with={"fastupdate": "on"},
    )
    families = ", ".join(
        f"'{name}', (SELECT coalesce(jsonb_agg(jsonb_build_array({columns})), '[]'::jsonb) "
        f"FROM {table} x WHERE x.rid = r.rid)"
        for table, (name, columns) in _FAMILIES.items()
    )
    op.execute(
        "INSERT INTO audit_event "
        "(rid, id, last_updated, recorded, patient_id, terms, idx, content) "
        "SELECT r.rid, r.id, r.last_updated, "
        "(SELECT min(d.low) FROM idx_date d WHERE d.rid = r.rid AND d.param = 'date'), "
        "r.patient_id, "
        "coalesce((SELECT array_agg(DISTINCT t) FROM ("
        "SELECT x.param || '|' || coalesce(x.target_id, x.url) AS t "
        "FROM idx_reference x WHERE x.rid = r.rid "
        "AND x.param IN ('patient', 'agent', 'entity') "
        "AND coalesce(x.target_id, x.url) IS NOT NULL "
        "UNION ALL SELECT 'site|' || x.code FROM idx_token x "
        "WHERE x.rid = r.rid AND x.param = 'site' AND x.code IS NOT NULL) terms), "
        "'{}'::text[]), "
        f"jsonb_build_object({families}), r.content "
        "FROM resource r WHERE r.resource_type = 'AuditEvent' AND NOT r.deleted"
    )
    for table in _FAMILIES:
        op.execute(f"DELETE FROM {table} WHERE resource_type = 'AuditEvent'")
    op.execute("DELETE FROM resource_history WHERE resource_type = 'AuditEvent'")
    # Their outbox events too: AuditEvents have none now, and pruning finds an event's
    # version in the history, which they are no longer in.
    op.execute("DELETE FROM event WHERE resource_type = 'AuditEvent'")
    op.execute("DELETE FROM resource WHERE resource_type = 'AuditEvent'")


def downgrade() -> None:
    op.drop_index("ix_audit_event_recorded_rid", table_name="audit_event")
    op.drop_index("ix_audit_event_terms", table_name="audit_event")
    op.drop_table("audit_event")
