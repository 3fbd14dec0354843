"""What every interaction receives: the store, the FHIR definitions, the limits, and the FHIR
version the request speaks.

Interactions know nothing about HTTP: a request goes in as plain values, a `Result` comes out,
and `routes/` turns it into a response. `routes/` makes one `FhirContext` per request with
`for_request()`, so `ctx.fhir_version` is the version that request negotiated ("4.0" or "4.3").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cmfhir.auth.principal import OPEN, Principal
from cmfhir.resources.compartment import PatientCompartment
from cmfhir.resources.fhir_versions import DEFAULT_VERSION
from cmfhir.resources.operations import OperationRegistry
from cmfhir.resources.search_parameters import SearchParameterRegistry
from cmfhir.store import Store

__all__ = ["FhirContext", "Limits", "Result", "instant", "utcnow"]


@dataclass(frozen=True, slots=True)
class Limits:
    default_count: int = 20
    max_count: int = 1000
    max_bundle_entries: int = 20_000
    # _include/_revinclude: most resources added to one page, and most levels followed
    # (the first, then `:iterate` ones), so `_include:iterate=*` stays bounded.
    max_included: int = 1000
    max_include_depth: int = 4
    # Without `_total`, a first page states its total when there are at most this many.
    default_total_bound: int = 1000
    # What a client may not send in one body it may not build with JSON Patch `copy` either.
    max_body_bytes: int = 64 * 1024 * 1024
    # What the GET entries of one batch or transaction may return (interactions.budget).
    max_response_entries: int = 10_000
    max_response_bytes: int = 128 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FhirContext:
    store: Store
    registry: SearchParameterRegistry
    compartment: PatientCompartment
    limits: Limits = field(default_factory=Limits)
    operations: OperationRegistry = field(default_factory=OperationRegistry)
    # The FHIR version of the request being served: "4.0" or "4.3" (resources.fhir_versions).
    fhir_version: str = DEFAULT_VERSION
    # Who the request or worker acts as; every store read narrows to what it may see.
    principal: Principal = OPEN
    # Operations implemented by the feature packages (gaps/, exchange/, reports/ ...), by
    # OperationDefinition code; app.py fills it, interactions.operations.invoke looks here
    # before its own implementations. Each is `async (ctx, OperationCall) -> Result`.
    implementations: Mapping[str, Callable[[Any, Any], Awaitable[Result]]] = field(
        default_factory=dict
    )
    # Checks and rewrites of one resource type's content before it is stored, by the
    # feature packages (subscriptions: the backport profile, sealed headers); each is
    # `(ctx, resource, id) -> resource` and raises an FhirError to refuse the write.
    write_hooks: Mapping[str, Callable[[Any, dict[str, Any], str], dict[str, Any]]] = field(
        default_factory=dict
    )
    # Additions to the CapabilityStatement (`statement -> statement`).
    capability_hooks: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = ()
    # The subscriptions feature (subscriptions.SubscriptionFeature) once wired.
    subscriptions: Any = None

    def for_request(self, fhir_version: str) -> FhirContext:
        """This context for one request speaking `fhir_version`."""
        if fhir_version == self.fhir_version:
            return self
        return replace(self, fhir_version=fhir_version)


@dataclass(slots=True)
class Result:
    """An interaction's answer. `body` is JSON text as stored, or a JSON-able value.

    `location` is relative to the base (`Patient/1/_history/2`); routes make it absolute.
    An operation may instead `stream` its body (chunks of bytes, produced while they are
    sent) with its own `media_type` (`application/fhir+ndjson`); a body is served as
    `application/fhir+json` unless `media_type` says otherwise.
    """

    status: int
    body: str | dict[str, Any] | None = None
    resource_type: str | None = None
    id: str | None = None
    version: int | None = None
    last_updated: datetime | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None
    media_type: str | None = None

    @property
    def etag(self) -> str | None:
        return None if self.version is None else f'W/"{self.version}"'


def utcnow() -> datetime:
    """Now, to the millisecond: the precision `meta.lastUpdated` is written with."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds: 2024-01-02T03:04:05.678Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
