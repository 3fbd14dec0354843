"""What the built-in authorization server keeps (docs/security.md): registered clients,
users, authorization codes, refresh tokens, EHR launch contexts, used client-assertion ids,
revoked tokens and failed logins. Codes and refresh tokens are stored as SHA-256 digests,
passwords as argon2 hashes: a copy of the database holds no usable credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cmfhir.store.schema import metadata

__all__ = [
    "Client",
    "Grant",
    "OAuthStore",
    "User",
]

TS = DateTime(timezone=True)

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("public", Boolean, nullable=False),
    Column("redirect_uris", ARRAY(Text), nullable=False),
    Column("jwks", JSONB),
    Column("scope", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)
oauth_user = Table(
    "oauth_user",
    metadata,
    Column("username", Text, primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("fhir_user", Text, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)
# Authorization codes and refresh tokens: one row per grant, found by the digest.
oauth_grant = Table(
    "oauth_grant",
    metadata,
    Column("digest", Text, primary_key=True),
    Column("kind", Text, nullable=False),  # "code" or "refresh"
    Column("client_id", Text, nullable=False),
    Column("username", Text),
    Column("fhir_user", Text),
    Column("patient", Text),
    Column("scope", Text, nullable=False),
    Column("redirect_uri", Text),
    Column("code_challenge", Text),
    Column("nonce", Text),
    Column("expires_at", TS, nullable=False),
    Column("used", Boolean, nullable=False, server_default="false"),
    Index(None, "expires_at"),
)
oauth_launch = Table(
    "oauth_launch",
    metadata,
    Column("launch", Text, primary_key=True),
    Column("patient", Text),
    Column("encounter", Text),
    Column("expires_at", TS, nullable=False),
)
# Client assertion ids (`jti`) seen, until the assertion expires: a replay is refused.
oauth_jti = Table(
    "oauth_jti",
    metadata,
    Column("client_id", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", TS, nullable=False),
)
# Access tokens revoked before they expire (their `jti`).
oauth_revoked = Table(
    "oauth_revoked",
    metadata,
    Column("jti", Text, primary_key=True),
    Column("expires_at", TS, nullable=False),
)
oauth_login_failure = Table(
    "oauth_login_failure",
    metadata,
    Column("key", Text, nullable=False),  # "user:NAME" or "address:IP"
    Column("at", TS, nullable=False, server_default=func.now()),
    Index(None, "key", "at"),
)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    public: bool
    redirect_uris: tuple[str, ...]
    jwks: dict[str, Any] | None
    scope: str


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    fhir_user: str


@dataclass(frozen=True, slots=True)
class Grant:
    kind: str
    client_id: str
    username: str | None
    fhir_user: str | None
    patient: str | None
    scope: str
    redirect_uri: str | None
    code_challenge: str | None
    nonce: str | None
    expires_at: datetime
    used: bool


class OAuthStore:
    """The authorization server's tables, each call in its own short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _run(self, statement: Any) -> Any:
        async with self.engine.begin() as conn:
            return await conn.execute(statement)

    async def now(self) -> datetime:
        async with self.engine.connect() as conn:
            value: datetime = (await conn.execute(select(func.now()))).scalar_one()
            return value

    # -- clients and users ---------------------------------------------------------------

    async def save_client(self, client: Client) -> None:
        values = {
            "client_id": client.client_id,
            "public": client.public,
            "redirect_uris": list(client.redirect_uris),
            "jwks": client.jwks,
            "scope": client.scope,
        }
        statement = pg_insert(oauth_client).values(**values)
        await self._run(
            statement.on_conflict_do_update(
                index_elements=[oauth_client.c.client_id],
                set_={k: statement.excluded[k] for k in values if k != "client_id"},
            )
        )

    async def client(self, client_id: str) -> Client | None:
        row = (
            await self._run(select(oauth_client).where(oauth_client.c.client_id == client_id))
        ).first()
        if row is None:
            return None
        return Client(row.client_id, row.public, tuple(row.redirect_uris), row.jwks, row.scope)

    async def save_user(self, user: User) -> None:
        statement = pg_insert(oauth_user).values(
            username=user.username, password_hash=user.password_hash, fhir_user=user.fhir_user
        )
        await self._run(
            statement.on_conflict_do_update(
                index_elements=[oauth_user.c.username],
                set_={
                    "password_hash": statement.excluded.password_hash,
                    "fhir_user": statement.excluded.fhir_user,
                },
            )
        )

    async def user(self, username: str) -> User | None:
        row = (await self._run(select(oauth_user).where(oauth_user.c.username == username))).first()
        return None if row is None else User(row.username, row.password_hash, row.fhir_user)

    async def counts(self) -> tuple[int, int]:
        """How many users and clients are registered."""
        async with self.engine.connect() as conn:
            users = (await conn.execute(select(func.count()).select_from(oauth_user))).scalar_one()
            clients = (
                await conn.execute(select(func.count()).select_from(oauth_client))
            ).scalar_one()
            return int(users), int(clients)

    # -- codes and refresh tokens ----------------------------------------------------------

    async def save_grant(self, digest: str, grant: Grant) -> None:
        await self._run(
            insert(oauth_grant).values(
                digest=digest,
                kind=grant.kind,
                client_id=grant.client_id,
                username=grant.username,
                fhir_user=grant.fhir_user,
                patient=grant.patient,
                scope=grant.scope,
                redirect_uri=grant.redirect_uri,
                code_challenge=grant.code_challenge,
                nonce=grant.nonce,
                expires_at=grant.expires_at,
            )
        )

    async def take_grant(self, digest: str, kind: str) -> Grant | None:
        """The unexpired, unused grant with this digest, marked used in the same statement:
        two requests racing with one code get it once."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(oauth_grant)
                    .where(
                        oauth_grant.c.digest == digest,
                        oauth_grant.c.kind == kind,
                        oauth_grant.c.used.is_(False),
                        oauth_grant.c.expires_at > func.now(),
                    )
                    .values(used=True)
                    .returning(*oauth_grant.c)
                )
            ).first()
        return None if row is None else _grant(row)

    async def find_grant(self, digest: str) -> Grant | None:
        row = (await self._run(select(oauth_grant).where(oauth_grant.c.digest == digest))).first()
        return None if row is None else _grant(row)

    async def revoke_grant(self, digest: str) -> None:
        await self._run(update(oauth_grant).where(oauth_grant.c.digest == digest).values(used=True))

    # -- launch contexts ----------------------------------------------------------------

    async def save_launch(self, launch: str, patient: str | None, expires_at: datetime) -> None:
        await self._run(
            insert(oauth_launch).values(launch=launch, patient=patient, expires_at=expires_at)
        )

    async def launch(self, launch: str) -> str | bool | None:
        """The launch's patient (None if it has none), or False for no such launch."""
        row = (
            await self._run(
                select(oauth_launch.c.patient).where(
                    oauth_launch.c.launch == launch, oauth_launch.c.expires_at > func.now()
                )
            )
        ).first()
        return False if row is None else row[0]

    # -- assertion replay, revocation, failed logins --------------------------------------

    async def first_use(self, client_id: str, jti: str, expires_at: datetime) -> bool:
        """Record a client assertion id; False if it was seen before (a replay)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(oauth_jti).where(oauth_jti.c.expires_at < func.now()))
            row = (
                await conn.execute(
                    pg_insert(oauth_jti)
                    .values(client_id=client_id, jti=jti, expires_at=expires_at)
                    .on_conflict_do_nothing()
                    .returning(oauth_jti.c.jti)
                )
            ).first()
        return row is not None

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        await self._run(
            pg_insert(oauth_revoked).values(jti=jti, expires_at=expires_at).on_conflict_do_nothing()
        )

    async def revoked(self) -> set[str]:
        """The access tokens revoked and not yet expired."""
        rows = await self._run(
            select(oauth_revoked.c.jti).where(oauth_revoked.c.expires_at > func.now())
        )
        return {row[0] for row in rows}

    async def failures(self, keys: Sequence[str], window: timedelta) -> int:
        """The most failed logins of any of `keys` within `window`."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(oauth_login_failure.c.key, func.count())
                .where(
                    oauth_login_failure.c.key.in_(list(keys)),
                    oauth_login_failure.c.at > func.now() - window,
                )
                .group_by(oauth_login_failure.c.key)
            )
            return max((int(row[1]) for row in rows), default=0)

    async def record_failure(self, keys: Sequence[str]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(oauth_login_failure), [{"key": k} for k in keys])

    async def clear_failures(self, key: str) -> None:
        await self._run(delete(oauth_login_failure).where(oauth_login_failure.c.key == key))


def _grant(row: Any) -> Grant:
    return Grant(
        row.kind,
        row.client_id,
        row.username,
        row.fhir_user,
        row.patient,
        row.scope,
        row.redirect_uri,
        row.code_challenge,
        row.nonce,
        row.expires_at,
        row.used,
    )
