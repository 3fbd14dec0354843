"""Locking and reading many resources by (type, id), as a large transaction Bundle does, and
the locks that make conditional writes with the same criteria take turns.

The keys travel as two array parameters joined with `unnest`, so each statement has the same
small text however many keys it carries: a row-value `IN` list of 12,000 pairs exceeded
PostgreSQL's stack depth, and past 16,383 pairs the driver's limit of 32,767 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text

from cmfhir.store.records import Current
from cmfhir.store.repository import Repository

__all__ = [
    "MAX_CLAIMS",
    "lock_all_criteria",
    "lock_criteria",
    "lock_or_claim_many",
    "read_contents",
]

Key = tuple[str, str]

_LOCK = text(
    "SELECT r.resource_type, r.id, r.rid, r.version, r.deleted "
    "FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i) "
    "JOIN resource AS r ON r.resource_type = k.t AND r.id = k.i "
    "ORDER BY r.rid FOR UPDATE OF r"
)
# Names not in the table yet are locked by a hash of `Type/id`, in a fixed order so that two
# transactions claiming overlapping names cannot deadlock.
_CLAIM = text(
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 0) AS h "
    "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS names"
)
_READ = text(
    "SELECT r.resource_type, r.id, CAST(r.content AS text) "
    "FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i) "
    "JOIN resource AS r ON r.resource_type = k.t AND r.id = k.i "
    "WHERE NOT r.deleted"
)


def _arrays(keys: Sequence[Key]) -> dict[str, list[str]]:
    return {"types": [t for t, _ in keys], "ids": [i for _, i in keys]}


async def _lock(repo: Repository, keys: Sequence[Key]) -> dict[Key, Current]:
    rows = await repo.conn.execute(_LOCK, _arrays(sorted(set(keys))))
    return {(r[0], r[1]): Current(r[2], r[3], r[4]) for r in rows}


# Each name claimed holds a slot of PostgreSQL's shared lock table until the transaction ends
# (max_locks_per_transaction, 64 by default, times the connections): 20,000 of them ran it
# out of shared memory. Past this many names, none is claimed, and the unique key on
# (type, id) alone keeps two creators of the same name from both succeeding.
MAX_CLAIMS = 64


async def lock_or_claim_many(
    repo: Repository, keys: Sequence[Key], *, claim: Sequence[Key] = ()
) -> dict[Key, Current]:
    """Lock the current rows of `keys` until the transaction ends. For the names in `claim`
    that do not exist yet (up to `MAX_CLAIMS` of them), hold a lock on the name, then look
    again, as `Repository.lock_or_claim` does: two clients creating the same Type/id then
    take turns, and the second one updates what the first created. Past that, the second
    one fails on the unique key and is answered 409 (retry)."""
    if not keys:
        return {}
    found = await _lock(repo, keys)
    missing = sorted({key for key in claim if key not in found})
    if missing and len(missing) <= MAX_CLAIMS:
        await repo.conn.execute(_CLAIM, {"keys": [f"{t}/{i}" for t, i in missing]})
        found.update(await _lock(repo, missing))
    return found


async def read_contents(repo: Repository, keys: Sequence[Key]) -> dict[Key, str]:
    """The current content (JSON text) of the live resources among `keys`."""
    if not keys:
        return {}
    rows = await repo.conn.execute(_READ, _arrays(sorted(set(keys))))
    return {(r[0], r[1]): r[2] for r in rows}


def _type_name(resource_type: str) -> str:
    return f"conditional writes of {resource_type}"


async def lock_criteria(repo: Repository, resource_type: str, key: str) -> None:
    """Until the transaction ends: the lock named by `key` (what a conditional write's
    criteria mean), and a shared lock on all conditional writes of `resource_type`, which a
    transaction with more of them than `MAX_CLAIMS` takes whole (`lock_all_criteria`)."""
    await repo.conn.execute(
        text(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended(:all, 0)), "
            "pg_advisory_xact_lock(hashtextextended(:key, 0))"
        ),
        {"all": _type_name(resource_type), "key": key},
    )


async def lock_all_criteria(repo: Repository, resource_types: Sequence[str]) -> None:
    """Until the transaction ends, no other conditional write of these types runs: one lock
    per type for a transaction with thousands of conditional entries, where one per
    criteria would run out PostgreSQL's lock table."""
    await repo.conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(k, 0) AS h "
            "FROM unnest(CAST(:names AS text[])) AS k ORDER BY 1) AS names"
        ),
        {"names": [_type_name(t) for t in resource_types]},
    )
