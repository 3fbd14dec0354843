"""transaction and batch (https://hl7.org/fhir/R4B/http.html#transaction).

A transaction is one database transaction: every entry is validated first, then targets are
resolved (conditional creates and updates search, new resources get ids), references to
`fullUrl`s and conditional references (`Patient?identifier=s|v`) are rewritten, all writes go
to the store together, and GETs run last — the spec's DELETE, POST, PUT/PATCH, GET order.
Any failure rolls the whole Bundle back. A batch runs each entry on its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from cmfhir.errors import BadRequest, FhirError, NotFound, PreconditionFailed, operation_outcome
from cmfhir.interactions.budget import response_budget, within_budget
from cmfhir.interactions.common import check_id, check_if_match, match, require_type
from cmfhir.interactions.context import FhirContext, Result, instant, utcnow
from cmfhir.interactions.create import create, find_existing
from cmfhir.interactions.delete import delete, delete_conditional
from cmfhir.interactions.entries import Entry, at_entry, parse_entries, processing_order
from cmfhir.interactions.patch import apply_patch, patch
from cmfhir.interactions.read import read_in, vread_in
from cmfhir.interactions.search_type import search_in
from cmfhir.interactions.update import conditional_target, update, update_conditional
from cmfhir.interactions.versions import deletion, new_id, to_version, written
from cmfhir.resources.fhirjson import RawJson, parse_json
from cmfhir.resources.validation import validate_resource
from cmfhir.store import NewVersion, Repository

__all__ = ["process_bundle"]

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def _status(code: int) -> str:
    return STATUS_TEXT.get(code, str(code))


def _response_entry(result: Result, representation: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _status(result.status)}
    if result.location:
        response["location"] = result.location
    if result.etag:
        response["etag"] = result.etag
    if result.last_updated:
        response["lastModified"] = instant(result.last_updated)
    entry: dict[str, Any] = {"response": response}
    if result.body is not None and (representation or result.status >= 400 or not result.location):
        body = result.body
        entry["resource"] = RawJson(body.encode()) if isinstance(body, str) else body
    return entry


def _patch_operations(entry: Entry) -> Any:
    """A JSON Patch in a Bundle travels as a Binary (https://hl7.org/fhir/R4B/http.html#patch)."""
    binary = entry.resource
    if not isinstance(binary, dict) or binary.get("resourceType") != "Binary":
        raise BadRequest("A PATCH entry carries its JSON Patch as a Binary resource")
    if binary.get("contentType") != "application/json-patch+json":
        raise BadRequest("Only JSON Patch (application/json-patch+json) is supported")
    try:
        return parse_json(base64.b64decode(binary.get("data", ""), validate=True))
    except (binascii.Error, ValueError) as error:
        raise BadRequest("The Binary's data is not base64") from error


async def _read_entry(ctx: FhirContext, repo: Repository, entry: Entry, base: str) -> Result:
    # What all GET entries of one Bundle may return is capped (interactions.budget).
    return await within_budget(ctx, lambda narrowed: _read(narrowed, repo, entry, base))


async def _read(ctx: FhirContext, repo: Repository, entry: Entry, base: str) -> Result:
    params = parse_qsl(entry.query or "", keep_blank_values=True)
    if entry.id is None:
        return await search_in(ctx, repo, entry.resource_type or None, params, base=base)
    if entry.rest[:1] == ["_history"] and len(entry.rest) == 2:
        return await vread_in(repo, entry.resource_type, entry.id, entry.rest[1], params)
    if entry.rest:
        raise BadRequest(f"GET {'/'.join(entry.rest)} is not supported inside a Bundle")
    return await read_in(repo, entry.resource_type, entry.id, params)


def _check_resource(entry: Entry) -> None:
    require_type(entry.resource_type)
    validate_resource(entry.resource, expected_type=entry.resource_type)
    if entry.method == "PUT" and entry.id is not None:
        check_id(entry.id)
        body_id = entry.resource.get("id")
        if body_id is not None and body_id != entry.id:
            raise BadRequest(
                f"The resource's id '{body_id}' differs from the id in the url '{entry.id}'"
            )


def _walk_references(value: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            visit(value)
        for child in value.values():
            if isinstance(child, dict | list):
                _walk_references(child, visit)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict | list):
                _walk_references(child, visit)


class _Transaction:
    def __init__(self, ctx: FhirContext, repo: Repository, base: str) -> None:
        self.ctx = ctx
        self.repo = repo
        self.base = base
        self.targets: dict[int, str] = {}  # entry index -> id it writes
        self.matched: dict[int, tuple[str, str]] = {}  # conditional creates that found one
        self.no_op: set[int] = set()  # conditional deletes that matched nothing
        self.mapping: dict[str, str] = {}  # fullUrl -> Type/id
        self.touched: dict[tuple[str, str], int] = {}

    def _claim(self, entry: Entry, id: str) -> None:
        key = (entry.resource_type, id)
        if key in self.touched:
            raise BadRequest(
                f"{entry.resource_type}/{id} is changed by both Bundle.entry"
                f"[{self.touched[key]}] and Bundle.entry[{entry.index}]"
            )
        self.touched[key] = entry.index
        self.targets[entry.index] = id
        if entry.full_url:
            self.mapping[entry.full_url] = f"{entry.resource_type}/{id}"

    async def resolve(self, entry: Entry) -> None:
        """Decide which resource each write entry changes."""
        if entry.method == "POST":
            if entry.if_none_exist:
                found = await find_existing(
                    self.ctx, self.repo, entry.resource_type, entry.if_none_exist
                )
                if found is not None:
                    self.matched[entry.index] = found
                    if entry.full_url:
                        self.mapping[entry.full_url] = f"{entry.resource_type}/{found[0]}"
                    return
            self._claim(entry, new_id())
        elif entry.method in ("PUT", "PATCH", "DELETE"):
            require_type(entry.resource_type)
            if entry.id is not None:
                check_id(entry.id)
                self._claim(entry, entry.id)
            elif entry.query is None:
                raise BadRequest(f"{entry.method} needs Type/id or Type?criteria")
            elif entry.method == "PUT":
                body_id = entry.resource.get("id")
                target = await conditional_target(
                    self.ctx, self.repo, entry.resource_type, entry.query, body_id
                )
                self._claim(entry, target)
            else:
                matches = await match(self.ctx, self.repo, entry.resource_type, entry.query)
                if len(matches) > 1:
                    raise PreconditionFailed(
                        f"'{entry.query}' matches more than one {entry.resource_type}"
                    )
                if not matches:
                    if entry.method == "PATCH":
                        raise NotFound(f"No {entry.resource_type} matches '{entry.query}'")
                    self.no_op.add(entry.index)
                    return
                self._claim(entry, matches[0][0])

    async def rewrite_references(self, entries: list[Entry]) -> None:
        conditional: dict[str, str] = {}
        pending: list[str] = []

        def collect(ref: dict[str, Any]) -> None:
            target = ref["reference"]
            if "?" in target and target not in self.mapping and target not in conditional:
                pending.append(target)
                conditional[target] = ""

        writes = [e for e in entries if e.method in ("POST", "PUT") and e.index not in self.matched]
        for e in writes:
            _walk_references(e.resource, collect)
        for target in pending:
            resource_type, _, query = target.partition("?")
            require_type(resource_type)
            found = await match(self.ctx, self.repo, resource_type, query)
            if len(found) != 1:
                raise PreconditionFailed(
                    f"The conditional reference '{target}' matches "
                    f"{'no' if not found else 'more than one'} {resource_type}"
                )
            conditional[target] = f"{resource_type}/{found[0][0]}"

        def rewrite(ref: dict[str, Any]) -> None:
            target = ref["reference"]
            replacement = self.mapping.get(target) or conditional.get(target)
            if replacement:
                ref["reference"] = replacement

        for e in writes:
            _walk_references(e.resource, rewrite)

    async def write(self, entries: list[Entry]) -> dict[int, Result]:
        writes = [e for e in entries if e.index in self.targets]
        locked = await self.repo.lock_or_claim(
            [(e.resource_type, self.targets[e.index]) for e in writes if e.method != "POST"]
        )
        records: list[tuple[Entry, NewVersion, bool]] = []
        results: dict[int, Result] = {}
        now = utcnow()
        for e in writes:
            id = self.targets[e.index]
            try:
                current = locked.get((e.resource_type, id))
                if e.method == "POST":
                    record, _ = to_version(
                        self.ctx, e.resource, id=id, version=1, now=now, method="create", rid=None
                    )
                    records.append((e, record, True))
                elif e.method == "DELETE":
                    if current is None or current.deleted:
                        results[e.index] = Result(204)
                        continue
                    check_if_match(e.if_match, current.version, f"{e.resource_type}/{id}")
                    record = deletion(e.resource_type, id, current.version + 1, now, current.rid)
                    records.append((e, record, False))
                else:
                    if e.method == "PATCH":
                        if current is None or current.deleted:
                            raise NotFound(f"{e.resource_type}/{id} is not known")
                        stored = await self.repo.read(e.resource_type, id)
                        assert stored is not None and stored.content is not None
                        body = apply_patch(
                            parse_json(stored.content),
                            _patch_operations(e),
                            max_copied=self.ctx.limits.max_body_bytes,
                        )
                        validate_resource(body, expected_type=e.resource_type)
                    else:
                        body = e.resource
                    if current is not None:
                        check_if_match(e.if_match, current.version, f"{e.resource_type}/{id}")
                    elif e.if_match is not None:
                        raise PreconditionFailed(f"{e.resource_type}/{id} does not exist")
                    created = current is None or current.deleted
                    record, _ = to_version(
                        self.ctx,
                        body,
                        id=id,
                        version=1 if current is None else current.version + 1,
                        now=now,
                        method="create" if created else "update",
                        rid=None if current is None else current.rid,
                    )
                    records.append((e, record, created))
            except FhirError as error:
                raise at_entry(error, e.index) from error
        await self.repo.write([record for _, record, _ in records])
        for e, record, created in records:
            results[e.index] = written(record, created)
        return results


async def _transaction(
    ctx: FhirContext, entries: list[Entry], base: str, representation: bool
) -> dict[str, Any]:
    for e in entries:
        if e.method in ("POST", "PUT"):
            try:
                _check_resource(e)
            except FhirError as error:
                raise at_entry(error, e.index) from error
    ordered = processing_order(entries)
    async with ctx.store.transaction() as repo:
        tx = _Transaction(ctx, repo, base)
        for e in ordered:
            try:
                await tx.resolve(e)
            except FhirError as error:
                raise at_entry(error, e.index) from error
        await tx.rewrite_references(ordered)
        results = await tx.write(ordered)
        for index, (id, content) in tx.matched.items():
            results[index] = Result(200, content, resource_type=entries[index].resource_type, id=id)
        for index in tx.no_op:
            results[index] = Result(204)
        for e in ordered:
            if e.method in ("GET", "HEAD"):
                try:
                    results[e.index] = await _read_entry(ctx, repo, e, base)
                except FhirError as error:
                    raise at_entry(error, e.index) from error
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(results[e.index], representation) for e in entries],
    }


async def _batch_entry(ctx: FhirContext, e: Entry, base: str) -> Result:
    calls: dict[str, Callable[[], Awaitable[Result]]] = {
        "POST": lambda: create(ctx, e.resource_type, e.resource, if_none_exist=e.if_none_exist),
        "PUT": lambda: (
            update(ctx, e.resource_type, e.id, e.resource, if_match=e.if_match)
            if e.id is not None
            else update_conditional(
                ctx, e.resource_type, e.query or "", e.resource, if_match=e.if_match
            )
        ),
        "PATCH": lambda: patch(
            ctx, e.resource_type, e.id or "", _patch_operations(e), if_match=e.if_match
        ),
        "DELETE": lambda: (
            delete(ctx, e.resource_type, e.id, if_match=e.if_match)
            if e.id is not None
            else delete_conditional(ctx, e.resource_type, e.query or "")
        ),
    }
    if e.method in calls:
        return await calls[e.method]()
    async with ctx.store.transaction(read_only=True) as repo:
        return await _read_entry(ctx, repo, e, base)


async def _batch(
    ctx: FhirContext, entries: list[Entry], base: str, representation: bool
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for e in entries:
        try:
            result = await _batch_entry(ctx, e, base)
            out.append(_response_entry(result, representation))
        except FhirError as error:
            error = at_entry(error, e.index)
            out.append(
                {
                    "response": {
                        "status": str(error.status),
                        "outcome": operation_outcome(error.issues),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


async def process_bundle(
    ctx: FhirContext, bundle: Any, *, base: str, representation: bool = True
) -> Result:
    kind, entries = parse_entries(bundle, base, ctx.limits.max_bundle_entries)
    with response_budget(ctx.limits):
        if kind == "transaction":
            return Result(200, await _transaction(ctx, entries, base, representation))
        return Result(200, await _batch(ctx, entries, base, representation))
