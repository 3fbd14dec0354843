"""event: writing transaction id (gap-free reading order) and the previous member

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Events written before this revision all get the migrating transaction's id: they
    # are committed, and among themselves `seq` keeps their order.
    op.add_column(
        "event",
        sa.Column(
            "xid",
            sa.BigInteger(),
            server_default=sa.text("(pg_current_xact_id())::text::bigint"),
            nullable=False,
        ),
    )
    op.add_column("event", sa.Column("previous_patient_id", sa.Text(), nullable=True))
    op.create_index(op.f("ix_event_xid_seq"), "event", ["xid", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_event_xid_seq"), table_name="event")
    op.drop_column("event", "previous_patient_id")
    op.drop_column("event", "xid")
