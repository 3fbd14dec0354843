"""What every interaction receives: the store, the FHIR definitions, and the limits.

Interactions know nothing about HTTP: a request goes in as plain values, a `Result` comes out,
and `routes/` turns it into a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cmfhir.resources.compartment import PatientCompartment
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


@dataclass(slots=True)
class Result:
    """An interaction's answer. `body` is JSON text as stored, or a JSON-able value.

    `location` is relative to the base (`Patient/1/_history/2`); routes make it absolute.
    """

    status: int
    body: str | dict[str, Any] | None = None
    resource_type: str | None = None
    id: str | None = None
    version: int | None = None
    last_updated: datetime | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

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
