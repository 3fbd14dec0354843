"""consumers: the outbox as a work queue (positions, wake-up, pruning) and the gap engine's
member queue

- `event.origin`: who wrote the event (a worker that marks its transactions, so that it can
  skip its own writes); null for clients.
- `consumer`: one position in the outbox per consumer (gaps, subscriptions, exports).
- `event_pruned`: one row per pruning run; `cmfhir check` tells pruned events from missing
  ones by it.
- `worker_schedule`: when each scheduled job (the daily gap sweep) last ran.
- `gap_member`: members whose care gaps are to be evaluated, claimed FOR UPDATE SKIP LOCKED.
- A statement trigger on `event` sends NOTIFY cmfhir_event at commit of every writing
  transaction (COPY fires it too), so consumers wake without polling.

Revision ID: 0008_consumers
Revises: 0004_search
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_consumers"
down_revision: str | None = "0007_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A column with a volatile default would rewrite the table: added without one first.
    op.add_column("event", sa.Column("origin", sa.Text(), nullable=True))
    op.alter_column(
        "event",
        "origin",
        server_default=sa.text("nullif(current_setting('cmfhir.origin', true), '')"),
    )
    op.create_table(
        "consumer",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("xid", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("seq", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_consumer")),
    )
    op.create_table(
        "event_pruned",
        sa.Column("run", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("pruned_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("before", _TS, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run", name=op.f("pk_event_pruned")),
    )
    op.create_table(
        "worker_schedule",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_run", _TS, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_schedule")),
    )
    op.create_table(
        "gap_member",
        sa.Column("patient_id", sa.Text(), nullable=False),
        sa.Column("due_at", _TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("as_of", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_gap_member")),
    )
    op.create_index(op.f("ix_gap_member_due_at"), "gap_member", ["due_at"], unique=False)
    op.execute(
        """
        CREATE FUNCTION cmfhir_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- One notification per transaction however many statements: PostgreSQL folds
            -- identical ones, and delivers them at commit (none on rollback).
            PERFORM pg_notify('cmfhir_event', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER event_notify AFTER INSERT ON event "
        "FOR EACH STATEMENT EXECUTE FUNCTION cmfhir_event_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER event_notify ON event")
    op.execute("DROP FUNCTION cmfhir_event_notify()")
    op.drop_index(op.f("ix_gap_member_due_at"), table_name="gap_member")
    op.drop_table("gap_member")
    op.drop_table("worker_schedule")
    op.drop_table("event_pruned")
    op.drop_table("consumer")
    op.drop_column("event", "origin")
