"""transaction (https://hl7.org/fhir/R4B/http.html#transaction, #trules); batch is in
`batch.py`.

A transaction is one database transaction. Every entry is validated first; then entries are
processed in the spec's order (DELETE, POST, PUT/PATCH, then reads), each seeing the effects
of those before it: before a conditional search (If-None-Exist, `PUT`/`DELETE Type?criteria`,
a conditional reference) the writes of the entries before it go to the database, so a
conditional create after a delete of the resource it names creates a new one. Writes are
otherwise gathered and stored together, which keeps a Bundle of 20,000 entries linear.

References to another entry's `fullUrl` are rewritten to the `Type/id` it resolves to; one
that names no entry is refused. Two conditional creates with the same criteria (however
spelled) make one resource; a resource may be changed by only one entry. Any failure rolls
the whole Bundle back.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cmfhir.errors import (
    BadRequest,
    FhirError,
    Gone,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from cmfhir.interactions.batch import run_batch
from cmfhir.interactions.budget import response_budget
from cmfhir.interactions.bundle_reads import read_entry
from cmfhir.interactions.common import (
    Conditions,
    check_id,
    check_if_match,
    match,
    parse_conditions,
    require_type,
)
from cmfhir.interactions.context import FhirContext, Result, utcnow
from cmfhir.interactions.create import find_existing
from cmfhir.interactions.entries import (
    READS,
    Entry,
    at_entry,
    parse_entries,
    patch_operations,
    processing_order,
    response_entry,
)
from cmfhir.interactions.patch import apply_patch
from cmfhir.interactions.questionnaire_responses import ResponseChecker
from cmfhir.interactions.references import holders, is_conditional, is_placeholder, rewrite
from cmfhir.interactions.update import conditional_target
from cmfhir.interactions.versions import deletion, new_id, to_version, written
from cmfhir.resources.fhirjson import parse_json
from cmfhir.resources.version_validation import validate_for_version
from cmfhir.store import NewVersion, Repository
from cmfhir.store.many import MAX_CLAIMS, lock_all_criteria, lock_or_claim_many, read_contents

__all__ = ["process_bundle", "run_transaction"]


def _check_resource(ctx: FhirContext, entry: Entry) -> None:
    require_type(entry.resource_type, ctx.fhir_version)
    validate_for_version(entry.resource, ctx.fhir_version, expected_type=entry.resource_type)
    if entry.interaction == "update" and entry.id is not None:
        check_id(entry.id)
        body_id = entry.resource.get("id")
        if body_id is not None and body_id != entry.id:
            raise BadRequest(
                f"The resource's id '{body_id}' differs from the id in the url '{entry.id}'"
            )


class _Transaction:
    def __init__(self, ctx: FhirContext, repo: Repository, entries: list[Entry]) -> None:
        self.ctx = ctx
        self.repo = repo
        self.now = utcnow()  # stamped again once each group of writes holds its locks
        self.full_urls = {e.full_url for e in entries if e.full_url}
        self.targets: dict[int, str] = {}  # entry index -> id it writes
        self.matched: dict[int, tuple[str, str]] = {}  # conditional creates that found one
        self.same_as: dict[int, int] = {}  # conditional creates that matched an earlier entry
        self.no_op: set[int] = set()  # conditional deletes that matched nothing
        self.resolved: dict[str, str] = {}  # fullUrl or conditional reference -> Type/id
        self.touched: dict[tuple[str, str], int] = {}
        self.conditions: dict[str, int] = {}  # criteria meaning -> entry that first used it
        self.pending: list[Entry] = []  # resolved writes not yet stored
        self.records: dict[int, NewVersion] = {}
        self.results: dict[int, Result] = {}
        self.whole_types: set[str] = set()  # types whose conditional writes are all locked
        self.responses = ResponseChecker(ctx, repo)  # QuestionnaireResponses against theirs

    async def lock_conditional_types(self, entries: list[Entry]) -> None:
        """A lock per criteria holds a slot of PostgreSQL's lock table: for a type with more
        conditional entries than `MAX_CLAIMS`, lock all conditional writes of it instead."""
        per_type = Counter(
            e.resource_type
            for e in entries
            if e.interaction in ("update-conditional", "delete-conditional")
            or (e.interaction == "create" and e.if_none_exist)
        )
        self.whole_types = {t for t, n in per_type.items() if n > MAX_CLAIMS}
        if self.whole_types:
            await lock_all_criteria(self.repo, sorted(self.whole_types))

    # -- resolving: which resource each entry changes ----------------------------------------

    def _claim(self, entry: Entry, id: str) -> None:
        key = (entry.resource_type, id)
        if key in self.touched:
            raise BadRequest(
                f"{entry.resource_type}/{id} is changed by both Bundle.entry"
                f"[{self.touched[key]}] and Bundle.entry[{entry.index}]; a transaction may "
                "change a resource only once"
            )
        self.touched[key] = entry.index
        self.targets[entry.index] = id
        if entry.full_url:
            self.resolved[entry.full_url] = f"{entry.resource_type}/{id}"
        self.pending.append(entry)

    def _map(self, entry: Entry, id: str) -> None:
        if entry.full_url:
            self.resolved[entry.full_url] = f"{entry.resource_type}/{id}"

    async def _conditional_create(self, entry: Entry, conditions: Conditions) -> None:
        earlier = self.conditions.get(conditions.key)
        if earlier is not None and earlier in self.targets:
            # The same criteria as an earlier conditional create that creates: this entry
            # matches what that one creates, as a search after it would.
            self.same_as[entry.index] = earlier
            self._map(entry, self.targets[earlier])
            return
        if earlier is not None and earlier in self.matched:
            self.matched[entry.index] = self.matched[earlier]
            self._map(entry, self.matched[earlier][0])
            return
        await self.flush_before(conditions)
        found = await find_existing(
            self.repo, conditions, lock=conditions.resource_type not in self.whole_types
        )
        self.conditions[conditions.key] = entry.index
        if found is not None:
            self.matched[entry.index] = found
            self._map(entry, found[0])
        else:
            self._claim(entry, new_id())

    async def _conditional_update(self, entry: Entry, conditions: Conditions) -> None:
        earlier = self.conditions.get(conditions.key)
        if earlier is not None and earlier in self.targets:
            raise BadRequest(
                f"Bundle.entry[{earlier}] and Bundle.entry[{entry.index}] both write the "
                f"{entry.resource_type} that '{conditions.query}' matches; a transaction may "
                "change a resource only once"
            )
        await self.flush_before(conditions)
        target, _ = await conditional_target(
            self.repo,
            conditions,
            entry.resource.get("id"),
            lock=conditions.resource_type not in self.whole_types,
        )
        self.conditions.setdefault(conditions.key, entry.index)
        self._claim(entry, target)

    async def _conditional_delete(self, entry: Entry, conditions: Conditions) -> None:
        await self.flush_before(conditions)
        found = await match(
            self.repo, conditions, lock=conditions.resource_type not in self.whole_types
        )
        if len(found) > 1:
            raise PreconditionFailed(
                f"'{conditions.query}' matches more than one {entry.resource_type}"
            )
        if found:
            self._claim(entry, found[0][0])
        else:
            self.no_op.add(entry.index)

    async def resolve(self, entry: Entry) -> None:
        kind = entry.interaction
        if kind in ("update", "patch", "delete"):
            require_type(entry.resource_type, self.ctx.fhir_version)
            check_id(entry.id or "")
            self._claim(entry, entry.id or "")
        elif kind == "create":
            if entry.if_none_exist:
                conditions = parse_conditions(
                    self.ctx.registry, entry.resource_type, entry.if_none_exist
                )
                await self._conditional_create(entry, conditions)
            else:
                self._claim(entry, new_id())
        elif kind in ("update-conditional", "delete-conditional"):
            require_type(entry.resource_type, self.ctx.fhir_version)
            conditions = parse_conditions(self.ctx.registry, entry.resource_type, entry.query or "")
            if kind == "update-conditional":
                await self._conditional_update(entry, conditions)
            else:
                await self._conditional_delete(entry, conditions)

    def _ready(self, entry: Entry) -> bool:
        """Whether every reference in the entry's resource can be written as it will stay."""
        if entry.interaction not in ("create", "update", "update-conditional"):
            return True
        for ref in entry.references:
            reference = ref["reference"]
            if reference in self.resolved:
                continue
            if reference in self.full_urls or is_placeholder(reference):
                return False
            if is_conditional(reference):
                return False
        return True

    async def resolve_conditional_references(self) -> None:
        """`Patient?identifier=s|v` in a resource: the one resource it matches, searched
        after every other write of the Bundle is stored."""
        for entry in self.pending:
            if entry.interaction in ("create", "update", "update-conditional"):
                for ref in entry.references:
                    reference = ref["reference"]
                    if reference in self.resolved or not is_conditional(reference):
                        continue
                    try:
                        resource_type, _, query = reference.partition("?")
                        require_type(resource_type, self.ctx.fhir_version)
                        conditions = parse_conditions(self.ctx.registry, resource_type, query)
                        found = await match(self.repo, conditions, lock=False)
                    except FhirError as error:
                        raise at_entry(error, entry.index) from error
                    if len(found) != 1:
                        ambiguous = PreconditionFailed(
                            f"The conditional reference '{reference}' matches "
                            f"{'no' if not found else 'more than one'} {resource_type}"
                        )
                        raise at_entry(ambiguous, entry.index)
                    self.resolved[reference] = f"{resource_type}/{found[0][0]}"

    # -- writing ----------------------------------------------------------------------------

    async def flush_before(self, conditions: Conditions) -> None:
        """Store what a search with these criteria could see: nothing when no pending write
        is of the type searched and the criteria look at no other type."""
        joins = any(c.chain or c.has for c in conditions.request.criteria)
        if joins or any(e.resource_type == conditions.resource_type for e in self.pending):
            await self.flush()

    async def flush(self, *, everything: bool = False) -> None:
        """Store the pending writes whose references are final (all of them at the end)."""
        ready = [e for e in self.pending if everything or self._ready(e)]
        if not ready:
            return
        self.pending = [e for e in self.pending if not (everything or self._ready(e))]
        for e in ready:
            if e.interaction in ("create", "update", "update-conditional"):
                try:
                    rewrite(e.references, self.resolved)
                except FhirError as error:
                    raise at_entry(error, e.index) from error
        await self._write(ready)

    async def _write(self, entries: list[Entry]) -> None:
        keys = [(e.resource_type, self.targets[e.index]) for e in entries if e.method != "POST"]
        puts = [(e.resource_type, self.targets[e.index]) for e in entries if e.method == "PUT"]
        locked = await lock_or_claim_many(self.repo, keys, claim=puts)
        # After the locks: a version is never stamped earlier than the one it follows.
        self.now = utcnow()
        stored = await read_contents(
            self.repo,
            [(e.resource_type, self.targets[e.index]) for e in entries if e.method == "PATCH"],
        )
        records: list[tuple[Entry, NewVersion, bool]] = []
        for e in entries:
            try:
                made = self._version(e, locked, stored)
            except FhirError as error:
                raise at_entry(error, e.index) from error
            if made is not None:
                records.append((e, *made))
        await self.repo.write([record for _, record, _ in records])
        for e, record, created in records:
            try:
                await self.responses.check(record)
            except FhirError as error:
                raise at_entry(error, e.index) from error
            self.records[e.index] = record
            self.results[e.index] = written(record, created)

    def _version(
        self,
        e: Entry,
        locked: dict[tuple[str, str], Any],
        stored: dict[tuple[str, str], str],
    ) -> tuple[NewVersion, bool] | None:
        id = self.targets[e.index]
        key = (e.resource_type, id)
        current = locked.get(key)
        label = f"{e.resource_type}/{id}"
        if e.method == "POST":
            record, _ = to_version(
                self.ctx, e.resource, id=id, version=1, now=self.now, method="create", rid=None
            )
            return record, True
        if e.method == "DELETE":
            if current is None or current.deleted:
                self.results[e.index] = Result(204)
                return None
            check_if_match(e.if_match, current.version, label)
            return deletion(e.resource_type, id, current.version + 1, self.now, current.rid), False
        if e.method == "PATCH":
            if current is None:
                raise NotFound(f"{label} is not known")
            if current.deleted:
                raise Gone(f"{label} was deleted")
            check_if_match(e.if_match, current.version, label)
            body = apply_patch(
                parse_json(stored[key]),
                patch_operations(e),
                max_copied=self.ctx.limits.max_body_bytes,
            )
            validate_for_version(body, self.ctx.fhir_version, expected_type=e.resource_type)
            if body.get("id") != id:
                raise Unprocessable("A patch must not change the resource's id", expression=["id"])
            rewrite(holders(body), self.resolved)
        else:
            body = e.resource
            if current is not None:
                check_if_match(e.if_match, current.version, label)
            elif e.if_match is not None:
                raise PreconditionFailed(f"{label} does not exist")
        created = current is None or current.deleted
        record, _ = to_version(
            self.ctx,
            body,
            id=id,
            version=1 if current is None else current.version + 1,
            now=self.now,
            method="create" if created else "update",
            rid=None if current is None else current.rid,
        )
        return record, created

    def matched_results(self, entries: list[Entry]) -> None:
        for index, (id, content) in self.matched.items():
            self.results[index] = Result(
                200, content, resource_type=entries[index].resource_type, id=id
            )
        for index, earlier in self.same_as.items():
            record = self.records[earlier]
            self.results[index] = Result(
                200, record.content, resource_type=record.resource_type, id=record.id
            )
        for index in self.no_op:
            self.results[index] = Result(204)


def _check_placeholders(entries: list[Entry]) -> None:
    """A `urn:uuid:` reference that no entry has as its fullUrl is refused before anything
    is done (one whose entry ends up writing nothing is refused when it is rewritten)."""
    full_urls = {e.full_url for e in entries if e.full_url}
    for e in entries:
        if e.interaction in ("create", "update", "update-conditional"):
            for ref in e.references:
                reference = ref["reference"]
                if is_placeholder(reference) and reference not in full_urls:
                    error = BadRequest(
                        f"The reference '{reference}' names no entry of the Bundle "
                        "(no entry has it as its fullUrl)"
                    )
                    raise at_entry(error, e.index)


async def run_transaction(
    ctx: FhirContext, entries: list[Entry], base: str, representation: bool
) -> dict[str, Any]:
    for e in entries:
        try:
            if e.error is not None:
                raise e.error
            if e.interaction in ("create", "update", "update-conditional"):
                _check_resource(ctx, e)
                e.references = holders(e.resource)
        except FhirError as error:
            raise at_entry(error, e.index) from error
    _check_placeholders(entries)
    ordered = processing_order(entries)
    async with ctx.store.transaction(principal=ctx.principal) as repo:
        tx = _Transaction(ctx, repo, entries)
        await tx.lock_conditional_types(entries)
        for e in ordered:
            if e.interaction in READS:
                continue
            try:
                await tx.resolve(e)
            except FhirError as error:
                raise at_entry(error, e.index) from error
        await tx.flush()
        await tx.resolve_conditional_references()
        await tx.flush(everything=True)
        tx.matched_results(entries)
        for e in ordered:
            if e.interaction in READS:
                try:
                    tx.results[e.index] = await read_entry(ctx, repo, e, base)
                except FhirError as error:
                    raise at_entry(error, e.index) from error
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [response_entry(tx.results[e.index], representation) for e in entries],
    }


async def process_bundle(
    ctx: FhirContext, bundle: Any, *, base: str, representation: bool = True
) -> Result:
    """POST of a transaction or batch Bundle to the base."""
    kind, entries = parse_entries(bundle, base, ctx.limits.max_bundle_entries)
    with response_budget(ctx.limits):
        if kind == "transaction":
            return Result(200, await run_transaction(ctx, entries, base, representation))
        return Result(200, await run_batch(ctx, entries, base, representation))
