"""search: token and reference indexes that end with rid

A page in the default order is picked from the index rows of its most selective criterion
(store/search_sql.py). With `rid` as the last column of the token and reference indexes, the
rows of one value come out in rid order from an index-only scan, so the page's rids need no
sort and only the page's resources are read.

Revision ID: 0006_searchperf
Revises: 0004_search
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_searchperf"
down_revision: str | None = "0004_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("idx_token", ("resource_type", "param", "code", "system")),
    ("idx_reference", ("resource_type", "param", "target_id", "target_type")),
)


def _name(table: str, columns: Sequence[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, columns in _INDEXES:
        op.create_index(_name(table, (*columns, "rid")), table, [*columns, "rid"])
        op.drop_index(_name(table, columns), table_name=table)


def downgrade() -> None:
    for table, columns in _INDEXES:
        op.create_index(_name(table, columns), table, list(columns))
        op.drop_index(_name(table, (*columns, "rid")), table_name=table)
