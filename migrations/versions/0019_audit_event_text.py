"""audit_event_text: an AuditEvent's JSON and index records kept as written (`json`), in
rows stored whole

Each audited request writes a row of `audit_event`; reading it back is rare. As `jsonb`,
PostgreSQL parsed both JSON values of every row into its binary form (about a third of the
row's cost), and a row of 2 KB or more was compressed with pglz on the way in. Now `content`
and `idx` are `json` (checked, stored as the text sent) and the table keeps rows of up to
8 KB whole (`toast_tuple_target`): a quarter less PostgreSQL CPU per event
(bench/README.md, audit6), for some more disk. The searches of the trail read `idx` with
the `json` functions and give the access predicate the content as `jsonb`
(store/audit_queries.py), only for the rows they test.

Autovacuum treats the table as the append-only log it is: analyzed when it has doubled
(`autovacuum_analyze_scale_factor` 1.0, not a tenth: an ANALYZE of its sample costs about
0.6 s, which every 10,000 events of a 100,000-event table was 60 µs per event, more than
storing it) and vacuumed for its inserts when it has doubled too (the visibility map and
freezing; a GIN cleanup scans the whole terms index each time). Its distributions barely
move, and row counts come from its size.

Revision ID: 0019_audit_event_text
Revises: 0018_report_records
Create Date: 2026-12-02 02:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019_audit_event_text"
down_revision: str | None = "0018_report_records"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE audit_event ALTER COLUMN content TYPE json USING content::json, "
        "ALTER COLUMN idx TYPE json USING idx::json"
    )
    op.execute(
        "ALTER TABLE audit_event SET (toast_tuple_target = 8160, "
        "autovacuum_analyze_scale_factor = 1.0, autovacuum_vacuum_insert_scale_factor = 1.0)"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE audit_event RESET (toast_tuple_target, autovacuum_analyze_scale_factor, "
        "autovacuum_vacuum_insert_scale_factor)"
    )
    op.execute(
        "ALTER TABLE audit_event ALTER COLUMN content TYPE jsonb USING content::jsonb, "
        "ALTER COLUMN idx TYPE jsonb USING idx::jsonb"
    )
