"""subscriptions: delivery state, numbered notifications, attempts, sealing key

Revision ID: 0010_subscriptions
Revises: 0008_consumers
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_subscriptions"
down_revision: str | None = "0008_consumers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscription_state",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("heartbeat_s", sa.Integer(), nullable=True),
        sa.Column(
            "delivered_through", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("failing_since", TS, nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_sent_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscription_state")),
    )
    op.create_index(
        op.f("ix_subscription_state_next_attempt_at"), "subscription_state", ["next_attempt_at"]
    )
    op.create_table(
        "subscription_counter",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column(
            "events_since_start", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscription_counter")),
    )
    op.create_table(
        "subscription_notification",
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("event_number", sa.BigInteger(), nullable=False),
        sa.Column("focus_type", sa.Text(), nullable=False),
        sa.Column("focus_id", sa.Text(), nullable=False),
        sa.Column("focus_version", sa.Integer(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "subscription_id", "event_number", name=op.f("pk_subscription_notification")
        ),
    )
    op.create_table(
        "subscription_attempt",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("subscription_id", sa.Text(), nullable=False),
        sa.Column("attempted_at", TS, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("first_event", sa.BigInteger(), nullable=True),
        sa.Column("last_event", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_attempt")),
    )
    op.create_index(
        op.f("ix_subscription_attempt_subscription_id_id"),
        "subscription_attempt",
        ["subscription_id", "id"],
    )
    op.create_table(
        "subscription_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_key")),
    )


def downgrade() -> None:
    op.drop_table("subscription_key")
    op.drop_index(
        op.f("ix_subscription_attempt_subscription_id_id"), table_name="subscription_attempt"
    )
    op.drop_table("subscription_attempt")
    op.drop_table("subscription_notification")
    op.drop_table("subscription_counter")
    op.drop_index(op.f("ix_subscription_state_next_attempt_at"), table_name="subscription_state")
    op.drop_table("subscription_state")
