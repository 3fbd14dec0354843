"""audit_event_members: a search's AuditEvents about several members stored as one row

The events of one request about each member it touched are alike but for the member
(interactions/audit_rows.py): a row now holds them all, `members` naming the members in
order, and reads expand it into one event per member (store/audit_queries.py). Rows that
are one event keep `members` NULL. No rewrite: the column is nullable and has no default.

Revision ID: 0022_audit_event_members
Revises: 0021_audit_event_plain_text
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022_audit_event_members"
down_revision: str | None = "0021_audit_event_plain_text"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_event ADD COLUMN members text[]")


def downgrade() -> None:
    # Each member's event as a row of its own, then the grouped rows gone.
    op.execute(
        """
        INSERT INTO audit_event (id, last_updated, recorded, patient_id, terms, idx, content)
        SELECT a.id || '.' || m.n, a.last_updated, a.recorded,
               coalesce(a.patient_id, m.member), a.terms, a.idx,
               jsonb_set(
                   jsonb_set(a.content::jsonb, '{id}', to_jsonb(a.id || '.' || m.n)),
                   '{entity}',
                   jsonb_build_array(jsonb_build_object(
                       'what', jsonb_build_object('reference', 'Patient/' || m.member),
                       'type', jsonb_build_object(
                           'system',
                           'http://terminology.hl7.org/CodeSystem/audit-entity-type',
                           'code', '1')))
                   || coalesce(a.content::jsonb -> 'entity', '[]'::jsonb)
               )::text
        FROM audit_event a, unnest(a.members) WITH ORDINALITY m(member, n)
        WHERE a.members IS NOT NULL
        """
    )
    op.execute("DELETE FROM audit_event WHERE members IS NOT NULL")
    op.execute("ALTER TABLE audit_event DROP COLUMN members")
