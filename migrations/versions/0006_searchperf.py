"""search: token and reference indexes that end with rid

A page in the default order is picked from the index rows of its most selective criterion
(store/search_sql.py). With `rid` as the last key column of the token and reference
indexes, the rows of one value come out in rid order from an index-only scan, so the page's
rids need no sort and only the page's resources are read. The token index keeps `system` as
an included column, not a key: a probe by code and rid must not scan every system's rows.

Revision ID: 0006_searchperf
Revises: 0009_exchange
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_searchperf"
down_revision: str | None = "0009_exchange"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKEN_OLD = ("resource_type", "param", "code", "system")
_TOKEN_NEW = ("resource_type", "param", "code", "rid")
_REFERENCE_OLD = ("resource_type", "param", "target_id", "target_type")
_REFERENCE_NEW = (*_REFERENCE_OLD, "rid")


def _name(table: str, columns: Sequence[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    op.create_index(
        _name("idx_token", _TOKEN_NEW), "idx_token", list(_TOKEN_NEW), postgresql_include=["system"]
    )
    op.drop_index(_name("idx_token", _TOKEN_OLD), table_name="idx_token")
    op.create_index(_name("idx_reference", _REFERENCE_NEW), "idx_reference", list(_REFERENCE_NEW))
    op.drop_index(_name("idx_reference", _REFERENCE_OLD), table_name="idx_reference")


def downgrade() -> None:
    op.create_index(_name("idx_token", _TOKEN_OLD), "idx_token", list(_TOKEN_OLD))
    op.drop_index(_name("idx_token", _TOKEN_NEW), table_name="idx_token")
    op.create_index(_name("idx_reference", _REFERENCE_OLD), "idx_reference", list(_REFERENCE_OLD))
    op.drop_index(_name("idx_reference", _REFERENCE_NEW), table_name="idx_reference")
