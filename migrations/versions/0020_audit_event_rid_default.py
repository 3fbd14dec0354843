"""audit_event_rid_default: an AuditEvent's rid drawn from `resource`'s sequence by name

`audit_event.rid` defaulted to `nextval(pg_get_serial_sequence('resource', 'rid'))`, which
PostgreSQL evaluates for every row: the lookup of the column's sequence in the catalogs
cost about 6 µs per event, a tenth of what storing one costs. The default now names the
sequence (`resource_rid_seq`, the identity column's own, as found here), the same numbers
for 0.5 µs.

Revision ID: 0020_audit_event_rid_default
Revises: 0019_audit_event_text
Create Date: 2026-12-02 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_audit_event_rid_default"
down_revision: str | None = "0019_audit_event_text"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    found = op.get_bind().execute(sa.text("SELECT pg_get_serial_sequence('resource', 'rid')"))
    if found.scalar_one() != "public.resource_rid_seq":
        raise RuntimeError("resource.rid is not drawn from public.resource_rid_seq")
    op.execute(
        "ALTER TABLE audit_event ALTER COLUMN rid SET DEFAULT nextval('resource_rid_seq'::regclass)"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE audit_event ALTER COLUMN rid "
        "SET DEFAULT nextval(pg_get_serial_sequence('resource', 'rid'))"
    )
