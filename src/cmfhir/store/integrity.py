"""Referential integrity of references to resources on this server, checked as HAPI FHIR
does by default: a write may not point at a resource that does not exist (or is deleted),
and a delete may not leave current resources pointing at what it removed.

Only references a search parameter indexes are checked (the reference entries of the
versions written, which are their `idx_reference` rows), once per transaction, just before
it commits, with one set-based query for the writes (against `resource`) and one for the
deletes (against `idx_reference`); contained (`#id`), `urn:` and other servers' references
are not. A reference is local when it is relative (`Patient/1`, `Patient/1/_history/2`) or
absolute under one of the configured bases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.errors import Issue
from cmfhir.resources.fhirjson import parse_json
from cmfhir.store.audit_events import events, split_id
from cmfhir.store.records import NewVersion

__all__ = [
    "Dangling",
    "ReferencePolicy",
    "Referrer",
    "dangling_issue",
    "dangling_references",
    "referrers",
]

# How many offending references an OperationOutcome names.
SAMPLE = 10


@dataclass(frozen=True, slots=True)
class ReferencePolicy:
    """What `Repository.write` enforces. `bases` are this server's public base URLs
    (`https://fhir.example.org/fhir`): absolute references under them are local too."""

    on_write: bool = True
    on_delete: bool = True
    bases: tuple[str, ...] = ()


class Dangling(NamedTuple):
    """A reference in a version just written to a resource that is not there."""

    version: NewVersion
    param: str
    url: str


class Referrer(NamedTuple):
    """A current resource that still points at one that is being deleted."""

    resource_type: str
    id: str
    param: str
    target: str


# `ref` is an idx_reference row; :bases the configured base URLs (no trailing slash).
_LOCAL = """
    ref.target_id IS NOT NULL
    AND (
        ref.url = ref.target_type || '/' || ref.target_id
        OR starts_with(ref.url, ref.target_type || '/' || ref.target_id || '/_history/')
        OR EXISTS (
            SELECT 1 FROM unnest(CAST(:bases AS text[])) AS b(base)
            WHERE ref.url = b.base || '/' || ref.target_type || '/' || ref.target_id
               OR starts_with(
                    ref.url, b.base || '/' || ref.target_type || '/' || ref.target_id
                             || '/_history/')
        )
    )"""

# The targets that are there are locked FOR SHARE until the transaction ends: a concurrent
# delete (which locks its row FOR UPDATE first) then waits for this write to commit and
# sees its reference, or this write waits for the delete and sees the resource gone.
_PRESENT = text(
    """
    SELECT r.resource_type, r.id FROM resource r
    WHERE (r.resource_type, r.id) IN (
            SELECT * FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[])))
      AND NOT r.deleted
    ORDER BY r.rid
    FOR SHARE OF r
    """
)

# The AuditEvents among ids, each of its row (store/audit_events.py: `<row id>.<n>` is the
# `n`th of a row of several), the rows found by the table's unique index.
_AUDIT_EVENTS = text(
    f"SELECT r.id FROM {events('a.id = ANY(CAST(:rows AS text[]))')} r "
    "WHERE r.id = ANY(CAST(:ids AS text[]))"
)

# Run once the transaction's writes are done: resources it deleted have no index rows
# left, so deleting several resources that point at each other works; a target it created
# again after deleting it is there, and is not asked about.
# The targets drive the plan (materialized, so it cannot change): the rows pointing at each
# are found through the target index, however many targets a transaction deletes. Left to
# choose, the planner could walk every resource in `rid` order for the ORDER BY ... LIMIT
# and probe each, which took over a minute for a 20,000-entry delete on a busy server.
_REFERRERS = f"""
    WITH gone AS MATERIALIZED (
        SELECT target.resource_type, target.id
        FROM unnest(CAST(:types AS text[]), CAST(:ids AS text[])) AS k(t, i)
        JOIN resource target ON target.resource_type = k.t AND target.id = k.i
        WHERE target.deleted
    ), pointing AS MATERIALIZED (
        SELECT ref.rid, ref.param, ref.target_type, ref.target_id
        FROM gone
        JOIN idx_reference ref
          ON ref.target_type = gone.resource_type AND ref.target_id = gone.id
        WHERE {_LOCAL}
    )
    SELECT src.resource_type, src.id, p.param, p.target_type || '/' || p.target_id
    FROM pointing p
    JOIN resource src ON src.rid = p.rid
    WHERE NOT src.deleted AND src.resource_type <> 'AuditEvent'
    ORDER BY src.rid, p.param
    LIMIT {SAMPLE}"""


def _is_local(url: str, target: str, bases: Sequence[str]) -> bool:
    """Whether `url` names `target` (`Type/id`) on this server; the same test as _LOCAL."""
    for prefix in ("", *(b.rstrip("/") + "/" for b in bases)):
        if url == prefix + target or url.startswith(prefix + target + "/_history/"):
            return True
    return False


async def dangling_references(
    conn: AsyncConnection, versions: Sequence[NewVersion], bases: Sequence[str]
) -> list[Dangling]:
    """Local references of `versions` (written in this transaction) whose target is not
    there, up to SAMPLE of them; the targets that are there stay locked FOR SHARE."""
    wanted: list[tuple[NewVersion, str, str, tuple[str, str]]] = []
    for v in versions:
        urls: set[str] = set()  # one element can feed several parameters (subject, patient)
        for e in v.index.reference if v.index is not None else ():
            if (
                e.target_type is not None
                and e.target_id is not None
                and e.url not in urls
                and _is_local(e.url, f"{e.target_type}/{e.target_id}", bases)
            ):
                urls.add(e.url)
                wanted.append((v, e.param, e.url, (e.target_type, e.target_id)))
    if not wanted:
        return []
    targets = sorted({target for *_, target in wanted})
    rows = await conn.execute(
        _PRESENT, {"types": [t for t, _ in targets], "ids": [i for _, i in targets]}
    )
    present = {(r[0], r[1]) for r in rows}
    # AuditEvents are kept apart (store/audit_events.py) and never deleted: no lock.
    events = [i for t, i in targets if t == "AuditEvent"]
    if events:
        grouped = sorted({split_id(i)[0] for i in events})
        found = await conn.execute(_AUDIT_EVENTS, {"ids": events, "rows": grouped})
        present |= {("AuditEvent", r[0]) for r in found}
    missing = [Dangling(v, param, url) for v, param, url, target in wanted if target not in present]
    return missing[:SAMPLE]


async def referrers(
    conn: AsyncConnection, targets: Sequence[tuple[str, str]], bases: Sequence[str]
) -> list[Referrer]:
    """Current resources whose local references point at one of `targets` (type, id)."""
    if not targets:
        return []
    rows = await conn.execute(
        text(_REFERRERS),
        {
            "types": [t for t, _ in targets],
            "ids": [i for _, i in targets],
            "bases": [b.rstrip("/") for b in bases],
        },
    )
    return [Referrer(r[0], r[1], r[2], r[3]) for r in rows]


def _element_path(content: str | None, resource_type: str, url: str) -> str:
    """Where in the resource the reference `url` is written (`Observation.performer[1]`),
    or the resource type alone if it cannot be found (an index value may be shortened)."""
    if content is None:
        return resource_type

    def walk(value: Any, path: str) -> str | None:
        if isinstance(value, dict):
            if value.get("reference") == url:
                return path
            for key, child in value.items():
                if key != "contained" and isinstance(child, dict | list):
                    found = walk(child, f"{path}.{key}")
                    if found:
                        return found
        elif isinstance(value, list):
            for n, child in enumerate(value):
                found = walk(child, f"{path}[{n}]")
                if found:
                    return found
        return None

    return walk(parse_json(content), resource_type) or resource_type


def dangling_issue(found: Dangling) -> Issue:
    v, param, url = found
    where = _element_path(v.content, v.resource_type, url)
    return Issue(
        f"{v.resource_type}/{v.id}: the reference '{url}' at {where} (search parameter "
        f"'{param}') names no resource on this server (it does not exist or was deleted)",
        code="not-found",
        expression=(where,),
    )
