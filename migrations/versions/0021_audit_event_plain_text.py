"""audit_event_plain_text: an AuditEvent's JSON and index records stored as text

The server builds both (interactions/audit_rows.py, checked against the generic indexer by
tests/auth/test_audit_rows.py) and the table is written only by the server: as `json`,
PostgreSQL parsed each value once more on the way in to check it, about 6 µs of the ~45 µs
an event costs it (bench/README.md). The reads of the table cast them where they use them
(store/audit_queries.py: `idx::json`, `content::jsonb`), for the rows they read.

Revision ID: 0021_audit_event_plain_text
Revises: 0020_audit_event_rid_default
Create Date: 2026-12-02 17:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021_audit_event_plain_text"
down_revision: str | None = "0020_audit_event_rid_default"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_event ALTER COLUMN content TYPE text, ALTER COLUMN idx TYPE text")


def downgrade() -> None:
    op.execute(
        "ALTER TABLE audit_event ALTER COLUMN content TYPE json USING content::json, "
        "ALTER COLUMN idx TYPE json USING idx::json"
    )
