"""import_job: asynchronous `$import` jobs

One row per `$import` kick-off, with the columns of `export_job` (what was asked and by
whom, where it stands, the manifest once done) and `state`: how far the import got, written
after each committed batch, so a job whose worker died resumes where it stopped.

Revision ID: 0011_import_job
Revises: 0009_exchange
Create Date: 2026-11-30 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011_import_job"
down_revision: str | None = "0015_lag"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "import_job",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("principal", JSONB(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("lease_until", TS),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("progress", sa.Text()),
        sa.Column("transaction_time", TS),
        sa.Column("manifest", JSONB()),
        sa.Column("error", sa.Text()),
        sa.Column("expires_at", TS),
        sa.Column("state", JSONB()),
        sa.PrimaryKeyConstraint("id", name="pk_import_job"),
    )
    op.create_index("ix_import_job_status_created_at", "import_job", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("import_job")
