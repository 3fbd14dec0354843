"""The gap engine's queue of members to evaluate (`gap_member`), fed from the outbox and by
the sweep, leased by evaluators (chosen FOR UPDATE SKIP LOCKED, the lease committed at
once, so no row stays locked while a member is evaluated and queueing never waits for an
evaluation); and the member reads the engine's snapshot is made of. The gap engine itself
is gaps/engine.py."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import text

from cmfhir.store.repository import Repository

__all__ = [
    "GAP_CHANNEL",
    "Claimed",
    "begin_repeatable_read",
    "claim",
    "compartments",
    "done",
    "enqueue",
    "enqueue_all",
    "postpone",
    "queued",
    "release",
]

# Notified when members are queued, so evaluators in every process wake.
GAP_CHANNEL = "cmfhir_gaps"

# Patient id, the instant to evaluate at (None: now), and the queueing generation leased.
Claimed = tuple[str, datetime | None, int]

# Sorted, so that two transactions queueing overlapping members lock them in one order.
# A member already queued keeps its place; an explicit as_of (a sweep) replaces its own. A
# member a change queues is taken before those a sweep queued (`sweep` false sorts first),
# also when the sweep queued it first. A member queued again while it is being evaluated
# moves its generation: that evaluation may have read it before the change, so it stays
# queued (`done`).
_ENQUEUE = text(
    """
    INSERT INTO gap_member (patient_id, as_of, sweep)
    SELECT p, CAST(:as_of AS timestamptz), false
    FROM unnest(CAST(:ids AS text[])) AS p ORDER BY p
    ON CONFLICT (patient_id) DO UPDATE
        SET as_of = coalesce(EXCLUDED.as_of, gap_member.as_of),
            due_at = least(gap_member.due_at, EXCLUDED.due_at),
            attempts = 0,
            sweep = false,
            generation = gap_member.generation + 1
    """
)


async def enqueue(repo: Repository, patient_ids: Sequence[str], as_of: datetime | None) -> None:
    if patient_ids:
        await repo.conn.execute(_ENQUEUE, {"ids": sorted(set(patient_ids)), "as_of": as_of})


async def enqueue_all(repo: Repository, as_of: datetime | None) -> int:
    """Queue every member (every live Patient); returns how many."""
    result = await repo.conn.execute(
        text(
            """
            INSERT INTO gap_member (patient_id, as_of, sweep)
            SELECT id, CAST(:as_of AS timestamptz), true FROM resource
            WHERE resource_type = 'Patient' AND NOT deleted ORDER BY id
            ON CONFLICT (patient_id) DO UPDATE
                SET as_of = coalesce(EXCLUDED.as_of, gap_member.as_of),
                    due_at = least(gap_member.due_at, EXCLUDED.due_at),
                    attempts = 0,
                    generation = gap_member.generation + 1
            """
        ),
        {"as_of": as_of},
    )
    return int(result.rowcount)


async def begin_repeatable_read(repo: Repository) -> None:
    """Make the open transaction REPEATABLE READ: every read in it sees one snapshot, and a
    row changed by another transaction since then cannot be updated (40001, retried). It
    must be the transaction's first statement."""
    await repo.conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


async def claim(
    repo: Repository, limit: int, lease: timedelta, *, sweep: bool | None = None
) -> list[Claimed]:
    """Lease up to `limit` due members for `lease` (commit it at once: the rows are locked
    only until then); members another evaluator holds are skipped. Members a change queued
    come before those of a sweep; `sweep` True or False takes only those a sweep (or a
    change) queued."""
    kind = "" if sweep is None else ("AND sweep " if sweep else "AND NOT sweep ")
    rows = await repo.conn.execute(
        text(
            f"""
            WITH chosen AS (
                SELECT patient_id FROM gap_member
                WHERE due_at <= now() AND (leased_until IS NULL OR leased_until <= now())
                {kind}
                ORDER BY sweep, due_at LIMIT :n FOR UPDATE SKIP LOCKED
            )
            UPDATE gap_member g SET leased_until = now() + CAST(:lease AS interval)
            FROM chosen WHERE g.patient_id = chosen.patient_id
            RETURNING g.patient_id, g.as_of, g.generation
            """
        ),
        {"n": limit, "lease": lease},
    )
    return sorted((r[0], r[1], r[2]) for r in rows)


async def done(repo: Repository, claimed: Sequence[Claimed]) -> None:
    """The members evaluated leave the queue, unless queued again since they were leased
    (their generation moved): those are freed to be evaluated again. One statement."""
    await repo.conn.execute(
        text(
            """
            WITH finished AS (
                DELETE FROM gap_member g
                USING unnest(CAST(:ids AS text[]), CAST(:gens AS bigint[])) AS c(id, gen)
                WHERE g.patient_id = c.id AND g.generation = c.gen
                RETURNING g.patient_id
            )
            UPDATE gap_member SET leased_until = NULL
            WHERE patient_id = ANY(CAST(:ids AS text[])) AND leased_until IS NOT NULL
              AND patient_id NOT IN (SELECT patient_id FROM finished)
            """
        ),
        {"ids": [c[0] for c in claimed], "gens": [c[2] for c in claimed]},
    )


async def release(repo: Repository, patient_ids: Sequence[str]) -> None:
    """Give leased members back (not evaluated, or queued again meanwhile)."""
    await repo.conn.execute(
        text(
            "UPDATE gap_member SET leased_until = NULL "
            "WHERE patient_id = ANY(CAST(:ids AS text[])) AND leased_until IS NOT NULL"
        ),
        {"ids": list(patient_ids)},
    )


async def postpone(repo: Repository, patient_id: str, delay: timedelta) -> None:
    """Try a member again later (its evaluation failed), later each time."""
    await repo.conn.execute(
        text(
            "UPDATE gap_member SET attempts = attempts + 1, leased_until = NULL, "
            "due_at = now() + CAST(:d AS interval) * least(power(2, attempts), 64) "
            "WHERE patient_id = :p"
        ),
        {"p": patient_id, "d": delay},
    )


async def queued(repo: Repository) -> tuple[int, int]:
    """(members queued, of which due now)."""
    row = (
        await repo.conn.execute(
            text("SELECT count(*), count(*) FILTER (WHERE due_at <= now()) FROM gap_member")
        )
    ).one()
    return int(row[0]), int(row[1])


async def compartments(
    repo: Repository, patient_ids: Sequence[str], types: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """(patient id, JSON array of the resources) of each member with live resources in
    their Patient compartment, the Patient included; only those of `types` if given. One
    query for the whole batch of members, one row (one text to parse) per member."""
    narrowed = "" if types is None else "AND resource_type = ANY(CAST(:types AS text[])) "
    rows = await repo.conn.execute(
        text(
            "SELECT patient_id, '[' || string_agg(content::text, ',') || ']' FROM resource "
            "WHERE patient_id = ANY(CAST(:ids AS text[])) AND NOT deleted "
            f"{narrowed}GROUP BY patient_id"
        ),
        {"ids": list(patient_ids), **({} if types is None else {"types": sorted(types)})},
    )
    return [(r[0], r[1]) for r in rows]
