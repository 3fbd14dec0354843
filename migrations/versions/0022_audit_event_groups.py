"""audit_event_groups: several AuditEvents of one requestor and kind stored as one row

The trail's events of one requestor and kind of event in a batch (a search's one per
member on its page, a client's reads) share most of their content and index records
(interactions/audit_rows.py): a row now holds up to fifty of them, `events` a JSON array of
what each has of its own (its entities, request id, compartment, token and reference
records), and reads expand it into the events (store/audit_queries.py). Rows that are one
event keep `events` NULL. No rewrite: the column is nullable and has no default.

Revision ID: 0022_audit_event_groups
Revises: 0021_audit_event_plain_text
Create Date: 2026-12-02 18:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022_audit_event_groups"
down_revision: str | None = "0021_audit_event_plain_text"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_event ADD COLUMN events text")


def downgrade() -> None:
    # Each event of a row of several as a row of its own, then those rows gone.
    op.execute(
        """
        INSERT INTO audit_event (id, last_updated, recorded, patient_id, terms, idx, content)
        SELECT a.id || '.' || p.n, a.last_updated, a.recorded, p.e ->> 'patient', a.terms,
               (a.idx::jsonb || jsonb_build_object(
                   'token', coalesce(a.idx::jsonb -> 'token', '[]')
                            || coalesce(p.e -> 'idx' -> 'token', '[]'),
                   'reference', coalesce(a.idx::jsonb -> 'reference', '[]')
                                || coalesce(p.e -> 'idx' -> 'reference', '[]')))::text,
               (a.content::jsonb || jsonb_strip_nulls(jsonb_build_object(
                   'id', a.id || '.' || p.n,
                   'entity', p.e -> 'entity',
                   'source', a.content::jsonb -> 'source'
                             || jsonb_strip_nulls(jsonb_build_object('site', p.e -> 'site')))))::text
        FROM audit_event a, jsonb_array_elements(a.events::jsonb) WITH ORDINALITY p(e, n)
        WHERE a.events IS NOT NULL
        """
    )
    op.execute("DELETE FROM audit_event WHERE events IS NOT NULL")
    op.execute("ALTER TABLE audit_event DROP COLUMN events")
