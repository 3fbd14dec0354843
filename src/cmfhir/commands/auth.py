"""`cmfhir client register`, `cmfhir user add` and `cmfhir keys rotate`: administration of
the built-in authorization server (docs/security.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cmfhir.config import Settings

if TYPE_CHECKING:
    from cmfhir.store import OAuthStore

# The database, crypto and password libraries are imported by the commands that use them:
# `cmfhir serve` starts without them.

__all__ = ["add_commands"]

T = TypeVar("T")
_FHIR_USER = re.compile(r"^(Patient|Practitioner|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}$")
_IDENTITY_SCOPES = {
    "system/cmfhir-sensitive.read",  # auth.principal.SENSITIVE_SCOPE
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
}


def _with_store(work: Callable[[OAuthStore], Awaitable[T]]) -> T:
    from cmfhir.store import OAuthStore, open_database

    settings = Settings()

    async def run() -> T:
        database = await open_database(settings.database_url, settings.data_dir, pool_size=1)
        try:
            return await work(OAuthStore(database.engine))
        finally:
            await database.dispose()

    return asyncio.run(run())


def _fail(message: str) -> int:
    print(f"cmfhir: {message}", file=sys.stderr)
    return 2


def register_client(args: argparse.Namespace) -> int:
    from cmfhir.auth.scopes import parse_scope
    from cmfhir.store.oauth import Client

    unknown = [
        s for s in args.scope.split() if s not in _IDENTITY_SCOPES and parse_scope(s) is None
    ]
    if unknown:
        return _fail(f"not a SMART scope: {', '.join(unknown)}")
    jwks: dict[str, Any] | None = None
    if args.public:
        if not args.redirect_uri:
            return _fail("a public client needs at least one --redirect-uri")
    else:
        if args.jwks_file is None:
            return _fail("give --public with --redirect-uri, or --jwks-file for a backend client")
        try:
            loaded = json.loads(Path(args.jwks_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return _fail(f"cannot read the JWKS: {error}")
        if not isinstance(loaded, dict) or not isinstance(loaded.get("keys"), list):
            return _fail('the JWKS file must hold {"keys": [...]}')
        jwks = loaded
    client = Client(args.client_id, args.public, tuple(args.redirect_uri or ()), jwks, args.scope)
    _with_store(lambda store: store.save_client(client))
    print(f"client {args.client_id} registered")
    return 0


def add_user(args: argparse.Namespace) -> int:
    from cmfhir.auth.passwords import hash_password
    from cmfhir.store.oauth import User

    if not _FHIR_USER.match(args.fhir_user):
        return _fail("--fhir-user must be Patient/ID or Practitioner/ID")
    if len(args.password) < 8:
        return _fail("the password must have at least 8 characters")
    user = User(args.username, hash_password(args.password), args.fhir_user)
    _with_store(lambda store: store.save_user(user))
    print(f"user {args.username} added ({args.fhir_user})")
    return 0


def rotate_keys(args: argparse.Namespace) -> int:
    from cmfhir.auth.keys import SigningKeys

    settings = Settings()
    keys = SigningKeys(settings.data_dir / "auth-keys")
    keep = max(settings.access_token_lifetime_s, 300) + 60
    kid = keys.rotate(keep)
    print(f"new signing key {kid}; earlier keys stay in the JWKS for {keep} s after retiring")
    return 0


def add_commands(commands: Any) -> None:
    """Register the subcommands on cli.py's argparse subparsers."""
    client = commands.add_parser("client", help="manage OAuth clients")
    client_commands = client.add_subparsers(dest="client_command", required=True)
    register = client_commands.add_parser("register", help="register (or replace) a SMART client")
    register.add_argument("--client-id", required=True)
    register.add_argument("--public", action="store_true", help="a browser or native app")
    register.add_argument("--redirect-uri", action="append", help="exact redirect URI")
    register.add_argument("--jwks-file", help="the backend client's public keys (JWKS)")
    register.add_argument("--scope", required=True, help='scopes it may ask, e.g. "user/*.rs"')
    register.set_defaults(func=register_client)

    user = commands.add_parser("user", help="manage users of the built-in login")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="add (or replace) a user")
    add.add_argument("--username", required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--fhir-user", required=True, help="Patient/ID or Practitioner/ID")
    add.set_defaults(func=add_user)

    keys = commands.add_parser("keys", help="manage the token signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser("rotate", help="make a new signing key")
    rotate.set_defaults(func=rotate_keys)
