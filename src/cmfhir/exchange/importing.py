"""NDJSON import (`cmfhir import`, `$import`): each line a resource, validated, indexed and
made ready to store once as it is read (in a pool of validating processes when there is
one, a few chunks ahead of the writes, so the next batches are made ready while one is
written), then versioned and stored in transactions of up to `batch` resources
(exchange/import_writer.py: `PUT Type/id` when the line has an id, so references between
lines hold; `POST` otherwise; new resources COPYed). A line that cannot be stored is
reported as an OperationOutcome line naming it; the valid lines are stored.

Referential integrity is deferred: the batches are written without the per-write check
(a reference may name a resource of a later line), and at the end the references of
everything written since the import began are checked and the dangling ones reported.
Progress (lines done) is recorded after each committed batch, so an import that stopped
resumes after the last committed batch.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from typing import Any

from cmfhir.errors import FhirError, Issue, operation_outcome
from cmfhir.exchange.import_validators import definitions, installed
from cmfhir.exchange.import_writer import Definitions, Line, check_line, write_lines
from cmfhir.interactions.context import FhirContext
from cmfhir.store import ReferencePolicy, Store
from cmfhir.store.exchange import dangling_since

__all__ = ["ImportProgress", "check_references", "import_lines"]


@dataclass
class ImportProgress:
    """Where an import stands: lines done (committed or refused), stored, refused."""

    lines_done: int = 0
    stored: int = 0
    refused: int = 0
    started: str | None = None  # when the first run began (ISO), for the final check
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "lines_done": self.lines_done,
            "stored": self.stored,
            "refused": self.refused,
            "started": self.started,
            "complete": self.complete,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImportProgress:
        return cls(
            lines_done=int(data.get("lines_done", 0)),
            stored=int(data.get("stored", 0)),
            refused=int(data.get("refused", 0)),
            started=data.get("started"),
            complete=bool(data.get("complete", False)),
        )


def _outcome(line: int, error: FhirError | str, code: str = "invalid") -> dict[str, Any]:
    if isinstance(error, str):
        issues = [Issue(error, code=code, expression=(f"line {line}",))]
    else:
        issues = [
            Issue(
                i.diagnostics,
                code=i.code,
                severity=i.severity,
                expression=(f"line {line}", *i.expression),
            )
            for i in error.issues
        ]
    return operation_outcome(issues)


def deferred(ctx: FhirContext) -> FhirContext:
    """`ctx` writing without the per-write reference check (checked at the end instead)."""
    policy = ctx.store.references
    store = Store(
        ctx.store.engine,
        ReferencePolicy(on_write=False, on_delete=policy.on_delete, bases=policy.bases),
    )
    return replace(ctx, store=store)


async def _store(ctx: FhirContext, batch: list[Line], base: str) -> list[dict[str, Any]]:
    """Store one batch in one transaction; when it is refused, each line on its own, so
    only the bad lines are left out. The OperationOutcomes of the refused lines."""
    try:
        await write_lines(ctx, batch, base)
        return []
    except FhirError:
        if len(batch) == 1:
            raise
    errors = []
    for line in batch:
        try:
            await _store(ctx, [line], base)
        except FhirError as error:
            errors.append(_outcome(line.number, error))
    return errors


async def import_lines(
    ctx: FhirContext,
    lines: Iterable[bytes],
    progress: ImportProgress,
    *,
    base: str,
    batch: int = 500,
    on_batch: Callable[[ImportProgress, list[dict[str, Any]]], None] | None = None,
    on_commit: Callable[[ImportProgress, list[dict[str, Any]]], Awaitable[None]] | None = None,
    validators: Executor | None = None,
    ready: bool = True,
) -> ImportProgress:
    """Import NDJSON `lines` (all of the source: those before `progress.lines_done` are
    skipped). `on_batch` (or the coroutine `on_commit`) is called after each committed batch
    with the progress and the OperationOutcomes of the lines refused since the last call
    (persist both there). `validators`: a pool of processes that read and validate the
    lines ahead of the writes (else this process does, line by line). `ready`: lines made
    ready where they are read and new resources COPYed (False: each line versioned,
    indexed and written by the writer, as a transaction Bundle's entry is)."""
    writer = deferred(ctx)
    pending: list[Line] = []
    keys: set[tuple[str, str]] = set()
    refused: list[dict[str, Any]] = []

    async def flush(done: int) -> None:
        nonlocal pending, refused
        try:
            errors = await _store(writer, pending, base) if pending else []
        except FhirError as error:  # a batch of one line, which the database refused
            errors = [_outcome(pending[0].number, error)]
        progress.stored += len(pending) - len(errors)
        progress.refused += len(errors)
        progress.lines_done = done
        refused.extend(errors)
        if on_batch is not None:
            on_batch(progress, refused)
        if on_commit is not None:
            await on_commit(progress, refused)
        pending, refused = [], []
        keys.clear()

    reader = _Reader(lines, progress.lines_done, ahead=max(_AHEAD, batch // _CHUNK + 2))
    async for number, line in reader.checked(
        ctx.fhir_version, validators, definitions(ctx) if ready else None, ready
    ):
        if not isinstance(line, Line):
            refused.append(line)
            progress.refused += 1
            continue
        key = line.key
        if (key is not None and key in keys) or (line.resolve and pending):
            await flush(number - 1)  # one resource changes once per transaction
        if key is not None:
            keys.add(key)
        pending.append(line)
        if len(pending) >= batch or line.resolve:  # resolved alone, as a Bundle entry
            await flush(number)
    await flush(max(reader.last, progress.lines_done))
    return progress


def _check(
    version: str, number: int, raw: bytes, found: Definitions | None
) -> Line | dict[str, Any]:
    """The line read, validated and made ready, or the OperationOutcome that refuses it."""
    try:
        return check_line(version, number, raw, found)
    except FhirError as error:
        return _outcome(number, error)
    except ValueError as error:
        return _outcome(number, str(error))


def check_chunk(
    version: str, chunk: list[tuple[int, bytes]], ready: bool = True
) -> list[Line | dict[str, Any]]:
    """`_check` of each line of `chunk` (run in a validating process, with the definitions
    it was started with: import_validators.py)."""
    found = installed() if ready else None
    return [_check(version, number, raw, found) for number, raw in chunk]


class _Reader:
    """The source's lines past `skip` (blank ones left out), each read and validated; with
    a pool of processes, `_CHUNK` lines at a time in them, `ahead` chunks ahead of the
    writes (more than a batch), so the next batch is made ready while one is written."""

    def __init__(self, lines: Iterable[bytes], skip: int, *, ahead: int = 8) -> None:
        self.lines = lines
        self.skip = skip
        self.ahead = ahead
        self.last = 0  # the number of the last line read (blank or skipped ones too)

    def _numbered(self) -> Iterator[tuple[int, bytes]]:
        for number, raw in enumerate(self.lines, 1):
            self.last = number
            if number > self.skip and raw.strip():
                yield number, raw

    async def checked(
        self, version: str, pool: Executor | None, found: Definitions | None, ready: bool
    ) -> AsyncIterator[tuple[int, Line | dict[str, Any]]]:
        numbered = self._numbered()
        if pool is None:
            for number, raw in numbered:
                yield number, _check(version, number, raw, found)
            return
        loop = asyncio.get_running_loop()
        ahead: deque[tuple[list[int], asyncio.Future[list[Line | dict[str, Any]]]]] = deque()

        def submit() -> None:
            chunk = list(islice(numbered, _CHUNK))
            if chunk:
                work = loop.run_in_executor(pool, check_chunk, version, chunk, ready)
                ahead.append(([number for number, _ in chunk], work))

        for _ in range(self.ahead):
            submit()
        while ahead:
            numbers, work = ahead.popleft()
            results = await work
            submit()
            for number, result in zip(numbers, results, strict=True):
                yield number, result


_CHUNK = 100
_AHEAD = 8


async def check_references(ctx: FhirContext, since: datetime) -> list[dict[str, Any]]:
    """The deferred referential-integrity check: an OperationOutcome per resource written
    since `since` whose (indexed) reference names a local resource that is not there."""
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
        found = await dangling_since(repo, since)
    return [
        operation_outcome(
            [
                Issue(
                    f"{kind}/{id} refers to {url}, which is not here",
                    code="not-found",
                    expression=(f"{kind}/{id}",),
                )
            ]
        )
        for kind, id, url in found
    ]


def dump_line(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
