"""A parsed search (https://hl7.org/fhir/R4B/search.html): typed criteria, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from cmfhir.errors import Issue

__all__ = [
    "Chain",
    "Compartment",
    "CompositeValue",
    "Criterion",
    "DateValue",
    "Has",
    "Include",
    "NumberValue",
    "QuantityValue",
    "ReferenceValue",
    "SearchRequest",
    "SortKey",
    "StringValue",
    "TokenValue",
    "UriValue",
    "Value",
]


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`system|code`: system None = any system; system "" = no system; code None = any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class StringValue:
    normalized: str
    exact: str


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: str
    low: datetime
    high: datetime  # exclusive


@dataclass(frozen=True, slots=True)
class NumberValue:
    prefix: str
    value: Decimal
    low: Decimal  # the implicit precision range of the value
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityValue:
    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference as searched: by type and id, or (for absolute and canonical) by url."""

    target_type: str | None
    target_id: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class UriValue:
    value: str


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """One value of a composite parameter: every component must match within the same
    repetition of the element the parameter selects (one `Observation.component`). Each
    component's criterion is named as its index rows are (`code$j`)."""

    components: tuple[Criterion, ...]


Value = (
    TokenValue
    | StringValue
    | DateValue
    | NumberValue
    | QuantityValue
    | ReferenceValue
    | UriValue
    | CompositeValue
)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter as used in the query: values are ORed, criteria are ANDed.

    `type` is the search parameter type, or "id" / "lastUpdated" / "type" for the columns of
    the resource table, "chain" for `ref:Type.param=...` (each link in `chain`), "has" for
    `_has:Type:ref:param=...`. `missing` is set for `:missing=true|false`, and then
    `values` is empty. `stored` names the parameters whose index rows hold this one's
    values when it has none of its own (`SearchParameterRegistry.stored_under`; for a
    composite's component, their components' names); empty: its own, under `code`.
    """

    code: str
    type: str
    modifier: str | None
    values: tuple[Value, ...]
    missing: bool | None = None
    chain: tuple[Chain, ...] = ()
    has: Has | None = None
    stored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Chain:
    """`code:target_type.<criterion>`: the reference points at a `target_type` that matches."""

    target_type: str
    criterion: Criterion


@dataclass(frozen=True, slots=True)
class Has:
    """`_has:source_type:param:<criterion>`: some `source_type` whose `param` references the
    resource matches `criterion`."""

    source_type: str
    param: str
    criterion: Criterion


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param[:Target]` or `_revinclude=...` (reverse); `*` for any param.

    Forward: from each matched `source_type`, follow `param` to its targets (of
    `target_type` if given). Reverse: bring the `source_type` resources whose `param`
    points at a matched resource. `iterate` repeats it over the included resources too.
    """

    source_type: str
    param: str
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True, slots=True)
class Compartment:
    """Search inside a compartment (https://hl7.org/fhir/R4B/compartmentdefinition.html):
    resources whose `params` reference `owner_type/owner_id`."""

    owner_type: str
    owner_id: str
    params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    """`code` with its parameter `type` (or "id" / "lastUpdated" for the columns);
    `stored` as in `Criterion`."""

    code: str
    descending: bool
    type: str = "id"
    stored: tuple[str, ...] = ()


@dataclass(slots=True)
class SearchRequest:
    resource_type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 20
    cursor: str | None = None
    summary: str | None = None
    total: str | None = None
    sort: list[SortKey] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)
    include: list[Include] = field(default_factory=list)
    revinclude: list[Include] = field(default_factory=list)
    compartment: Compartment | None = None
    warnings: list[Issue] = field(default_factory=list)
    # The parameters as received, minus paging ones: the base of self/next links.
    echo: list[tuple[str, str]] = field(default_factory=list)
