"""delivery lag: sweep members behind changed ones, sender leases, notification dedupe,
pruning indexes

- `gap_member.sweep`: queued by a sweep, not by a change; the engine takes changed members
  first, so a sweep of every member does not hold back the gap of a write made meanwhile.
- `gap_member.generation`, `gap_member.leased_until`: an evaluator leases the members it
  evaluates (committed at once) instead of holding their rows locked while it evaluates,
  so queueing a member again never waits for an evaluation; a member queued again during
  its evaluation (its generation moved) stays queued.
- `subscription_state.leased_until`: a sender leases a Subscription for the length of a
  send instead of holding its row locked in a transaction across the HTTP request (which
  held back every gap-free outbox reader for that long).
- `ix_subscription_notification_focus`: the matcher reads ahead of the gap-free horizon and
  skips a change already numbered for a Subscription (one version, one notification).
- `ix_subscription_attempt_attempted_at`: pruning of old attempts.

Revision ID: 0015_lag
Revises: 0009_exchange
Create Date: 2026-11-30 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_lag"
down_revision: str | None = "0006_searchperf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "gap_member",
        sa.Column("sweep", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "gap_member",
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "gap_member", sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.drop_index(op.f("ix_gap_member_due_at"), table_name="gap_member")
    op.create_index(
        op.f("ix_gap_member_sweep_due_at"), "gap_member", ["sweep", "due_at"], unique=False
    )
    op.add_column(
        "subscription_state",
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_subscription_notification_focus",
        "subscription_notification",
        ["subscription_id", "focus_type", "focus_id", "focus_version"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscription_attempt_attempted_at"),
        "subscription_attempt",
        ["attempted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscription_attempt_attempted_at"), table_name="subscription_attempt")
    op.drop_index("ix_subscription_notification_focus", table_name="subscription_notification")
    op.drop_column("subscription_state", "leased_until")
    op.drop_index(op.f("ix_gap_member_sweep_due_at"), table_name="gap_member")
    op.create_index(op.f("ix_gap_member_due_at"), "gap_member", ["due_at"], unique=False)
    op.drop_column("gap_member", "leased_until")
    op.drop_column("gap_member", "generation")
    op.drop_column("gap_member", "sweep")
