"""AuditEvents are kept in a table of their own (store/audit_events.py): what reads,
searches and histories ask of AuditEvent is answered there, through the hooks below, and
what the table does not answer is refused with a 4xx that says so (docs/security.md,
"Where AuditEvents are kept")."""

from __future__ import annotations

from typing import Any

from cmfhir.auth.principal import Principal
from cmfhir.errors import BadRequest, MethodNotAllowed
from cmfhir.search.model import Criterion, SearchRequest
from cmfhir.store import Repository, Searches, SearchPage, Store, StoredVersion
from cmfhir.store.audit_queries import AUDIT_EVENT, driver_of, read_event, search_events

__all__ = [
    "AUDIT_EVENT",
    "read_audit_event",
    "refuse_links",
    "search_page",
]


async def read_audit_event(
    store: Store | Repository, principal: Principal | None, id: str, version: int | None = None
) -> StoredVersion | None:
    """AuditEvent `id` (read; `version`: vread) if `principal` may read it, from the
    store's read pool or in the repository's transaction."""
    if isinstance(store, Repository):
        return await read_event(await driver_of(store), principal, id, version)
    async with store.searching(principal) as searches:
        return await read_event(await driver_of(searches), principal, id, version)


def _names_audit_events(crit: Criterion) -> bool:
    if crit.has is not None and crit.has.source_type == AUDIT_EVENT:
        return True
    return any(
        link.target_type == AUDIT_EVENT or _names_audit_events(link.criterion)
        for link in crit.chain
    )


def refuse_links(request: SearchRequest) -> None:
    """Chains to AuditEvent, `_has:AuditEvent`, and `_include`/`_revinclude` from or to
    AuditEvent in a search of another type would find no AuditEvent (they read the other
    resources' index tables): refused, not answered wrong."""
    for crit in request.criteria:
        if _names_audit_events(crit):
            raise BadRequest(
                f"'{crit.code}' reaches AuditEvents, which are searched by their own "
                "parameters only (AuditEvent?patient=...)",
                expression=[crit.code],
            )
    for include in [*request.include, *request.revinclude]:
        if AUDIT_EVENT in (include.source_type, include.target_type):
            raise BadRequest(
                "AuditEvents are not included in other searches: search AuditEvent itself",
                expression=["_revinclude" if include.reverse else "_include"],
            )
    if request.resource_type is None:
        for crit in request.criteria:
            if crit.type == "type" and any(
                getattr(v, "code", None) == AUDIT_EVENT for v in crit.values
            ):
                raise BadRequest(
                    "AuditEvents are searched at AuditEvent (GET AuditEvent?...), not in a "
                    "search of all types",
                    expression=["_type"],
                )


async def search_page(
    repo: Searches, request: SearchRequest, *, count_up_to: int | None
) -> SearchPage:
    """A search's page: AuditEvent's from its table, any other type's from the store."""
    if request.resource_type != AUDIT_EVENT:
        refuse_links(request)
        return await repo.search(request, count_up_to=count_up_to)
    principal: Any = getattr(repo, "principal", None)
    return await search_events(
        await driver_of(repo), request, count_up_to=count_up_to, principal=principal
    )


# What AuditEvent offers (CapabilityStatement): no client writes, no conditional ones.
_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
_WRITE_ONLY = ("updateCreate", "conditionalCreate", "conditionalUpdate", "conditionalDelete")


def capability(entry: dict[str, Any]) -> dict[str, Any]:
    """A type's CapabilityStatement entry, AuditEvent's narrowed to what it offers."""
    if entry.get("type") != AUDIT_EVENT:
        return entry
    out = {k: v for k, v in entry.items() if k not in _WRITE_ONLY}
    out["interaction"] = [{"code": code} for code in _INTERACTIONS]
    out["versioning"] = "no-version"
    out["documentation"] = (
        "Recorded by the server's audit trail and never changed; searched by its own "
        "parameters (no chains, _has, _include or _revinclude); not in bulk export, "
        "$everything or system-level search and history"
    )
    return out


def refuse_bulk(kind: str, name: str) -> None:
    """AuditEvents are not exported in bulk nor brought by `$everything` (400 when named):
    they are searched at AuditEvent."""
    if kind == AUDIT_EVENT:
        raise BadRequest(
            f"{name} names AuditEvent: AuditEvents are searched at AuditEvent "
            "(AuditEvent?patient=...), not exported in bulk or by $everything",
            expression=[name],
        )


def refuse_write(resource_type: str) -> None:
    """A write of an AuditEvent that does not go through `Repository.write` (bulk import)
    is refused as that one refuses it (405)."""
    if resource_type == AUDIT_EVENT:
        raise MethodNotAllowed(
            "AuditEvents are recorded by the server and cannot be created, changed or "
            "deleted through the API"
        )
