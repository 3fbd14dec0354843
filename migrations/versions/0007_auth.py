"""auth: the built-in authorization server's tables (store/oauth.py)

Revision ID: 0007_auth
Revises: 0004_search
Create Date: 2026-11-30 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_auth"
down_revision: str | None = "0004_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("redirect_uris", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("jwks", postgresql.JSONB(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_oauth_client")),
    )
    op.create_table(
        "oauth_user",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("fhir_user", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_oauth_user")),
    )
    op.create_table(
        "oauth_grant",
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("fhir_user", sa.Text(), nullable=True),
        sa.Column("patient", sa.Text(), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.Text(), nullable=True),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used", sa.Boolean(), server_default="false", nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_oauth_grant")),
    )
    op.create_index(op.f("ix_oauth_grant_expires_at"), "oauth_grant", ["expires_at"])
    op.create_table(
        "oauth_launch",
        sa.Column("launch", sa.Text(), nullable=False),
        sa.Column("patient", sa.Text(), nullable=True),
        sa.Column("encounter", sa.Text(), nullable=True),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("launch", name=op.f("pk_oauth_launch")),
    )
    op.create_table(
        "oauth_jti",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_oauth_jti")),
    )
    op.create_table(
        "oauth_revoked",
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_oauth_revoked")),
    )
    op.create_table(
        "oauth_login_failure",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("at", TS, server_default=sa.text("now()"), nullable=False),
    )
    op.create_index(
        op.f("ix_oauth_login_failure_key_at"), "oauth_login_failure", ["key", "at"]
    )


def downgrade() -> None:
    for table in (
        "oauth_login_failure",
        "oauth_revoked",
        "oauth_jti",
        "oauth_launch",
        "oauth_grant",
        "oauth_user",
        "oauth_client",
    ):
        op.drop_table(table)
