"""search: composite parameter groups (grp on every index table)

A composite parameter's components are indexed as rows under `code$j` carrying `grp`, the
repetition of the element they come from, so that a composite search matches within one
repetition (one Observation.component). Existing resources get their composite rows from
`cmfhir reindex` (until then a composite search does not find them; `cmfhir check` lists
them as index rows that differ from their content).

Revision ID: 0004_search
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_search"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_string",
    "idx_token",
    "idx_uri",
)


def upgrade() -> None:
    # A nullable column without a default: no table rewrite.
    for table in _TABLES:
        op.add_column(table, sa.Column("grp", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        op.execute(sa.text(f"DELETE FROM {table} WHERE grp IS NOT NULL"))
        op.drop_column(table, "grp")
