"""Index values of a resource (https://hl7.org/fhir/R4B/search.html#ptypes): for every search
parameter of its type, the typed values a search compares against, one family per
parameter type, plus the patient compartment the resource belongs to.

Conventions the store and the query parser share:
- dates are half-open UTC ranges [low, high): `2020` is [2020-01-01T00:00Z, 2021-01-01T00:00Z);
  a date or time without a zone is taken as UTC; open ends of a Period are DATE_MIN/DATE_MAX.
- numbers carry their implicit precision: `100` is [99.5, 100.5), `100.0` is [99.95, 100.05);
  open ends of a Range are Decimal('-Infinity')/Decimal('Infinity').
- a Quantity's comparator (`<5`) is not indexed: the value is.
- strings are indexed normalized (`normalize_string`: case folded, accents and repeated
  whitespace removed) beside the exact text.
- `_id` and `_lastUpdated` are not extracted (the store keeps them as columns); special
  parameters (`near`) and those without an expression (`_text`, `_content`) neither.
- a composite parameter is extracted per repetition of the element its expression selects
  (each `Observation.component`): one `CompositeGroup` per repetition, holding the values
  of every component under `component_param(code, j)`, so a search matches the components
  within one repetition, never across two.
- a parameter whose expression is the union of other parameters' (`combo-code`) has its
  entries like any other, for readers of the values; `stored_elsewhere` names it, and the
  store gives it no rows (`SearchParameterRegistry.stored_under`, store/indexing.py).
- an expression that fails on a resource, or values its type cannot take, raise
  `IndexingFailed` naming the parameter: a resource is never left out of an index silently.
- references inside the resource (`#id`) are skipped; `urn:uuid:` references keep only their
  url (a transaction replaces them before indexing); an identifier-only reference goes to
  `reference_identifiers` so that `:identifier` can find it.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal, InvalidOperation, localcontext
from functools import lru_cache, partial
from typing import Any, NamedTuple

from cmfhir.errors import Unprocessable
from cmfhir.resources.fhirpath import (
    Extractor,
    FhirPathError,
    compile_on_type,
    compile_path,
    parse_reference,
    reference_type,
    required_keys,
    union_branches,
)
from cmfhir.resources.search_parameters import (
    SearchParameter,
    SearchParameterRegistry,
)

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "CompositeGroup",
    "DateEntry",
    "IdentifierTypeEntry",
    "IndexingFailed",
    "NumberEntry",
    "QuantityEntry",
    "ReferenceEntry",
    "ReferenceIdentifierEntry",
    "ResourceIndex",
    "StringEntry",
    "TokenEntry",
    "UriEntry",
    "add_references",
    "component_param",
    "composite_components",
    "composite_parameters",
    "date_range",
    "extract_index",
    "extract_parameters",
    "normalize_string",
    "number_range",
    "parse_reference",
]

DATE_MIN = datetime.min.replace(tzinfo=UTC)
DATE_MAX = datetime.max.replace(tzinfo=UTC)
NEGATIVE_INFINITY = Decimal("-Infinity")
INFINITY = Decimal("Infinity")
NOT_EXTRACTED = frozenset({"_id", "_lastUpdated"})
ISO_4217 = "urn:iso:std:iso:4217"


# --- typed values -------------------------------------------------------------------------
# NamedTuples rather than frozen dataclasses: as immutable and typed, but three times cheaper
# to create and hash (extraction builds tens of them per write and removes duplicates), and
# each entry is already the row tuple the store inserts after the parameter code.


class TokenEntry(NamedTuple):
    """A code: Coding/CodeableConcept (one per coding, and the concept's text alone when no
    display says the same), Identifier (system, value), ContactPoint (system, value), or a
    primitive (booleans as `true`/`false`). `text` is normalized (`normalize_string`): the
    display, the CodeableConcept.text or the Identifier.type.text that `:text` searches."""

    param: str
    system: str | None
    code: str | None
    text: str | None = None


class IdentifierTypeEntry(NamedTuple):
    """An Identifier with a typed coding, for `identifier:of-type=system|code|value`."""

    param: str
    type_system: str | None
    type_code: str
    value: str


class StringEntry(NamedTuple):
    param: str
    value: str  # normalize_string(exact)
    exact: str


class DateEntry(NamedTuple):
    param: str
    low: datetime  # inclusive, UTC
    high: datetime  # exclusive, UTC


class NumberEntry(NamedTuple):
    param: str
    value: Decimal | None  # None for a Range
    low: Decimal
    high: Decimal


class QuantityEntry(NamedTuple):
    param: str
    system: str | None
    code: str | None
    unit: str | None
    value: Decimal | None  # None for a Range
    low: Decimal
    high: Decimal


class ReferenceEntry(NamedTuple):
    """`url` is the reference as written (without a canonical's `|version`); type and id
    are filled when it ends with `Type/id` (relative, absolute, or with `/_history/n`)."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str
    version: str | None = None


class ReferenceIdentifierEntry(NamedTuple):
    param: str
    system: str | None
    value: str


class UriEntry(NamedTuple):
    param: str
    uri: str


@dataclass(slots=True)
class ResourceIndex:
    """Everything a resource version contributes to the search indexes, by value family."""

    token: list[TokenEntry] = field(default_factory=list)
    string: list[StringEntry] = field(default_factory=list)
    date: list[DateEntry] = field(default_factory=list)
    number: list[NumberEntry] = field(default_factory=list)
    quantity: list[QuantityEntry] = field(default_factory=list)
    reference: list[ReferenceEntry] = field(default_factory=list)
    uri: list[UriEntry] = field(default_factory=list)
    reference_identifiers: list[ReferenceIdentifierEntry] = field(default_factory=list)
    identifier_types: list[IdentifierTypeEntry] = field(default_factory=list)
    composite: list[CompositeGroup] = field(default_factory=list)
    # The parameter names (a composite's as its components', `code$j`) whose entries are
    # here for readers of the values but get no index rows: their rows are those of other
    # parameters (`SearchParameterRegistry.stored_under`, store/indexing.py).
    stored_elsewhere: frozenset[str] = frozenset()


class CompositeGroup(NamedTuple):
    """The component values of a composite parameter in one repetition of its element (one
    `Observation.component`): `group` numbers the repetitions of a resource, `values` holds
    the values of component j under `component_param(code, j)`."""

    group: int
    values: ResourceIndex


def component_param(code: str, position: int) -> str:
    """The name the values of a composite's component are indexed under:
    `component-code-value-quantity$1` for the second (`$` never occurs in a code)."""
    return f"{code}${position}"


class IndexingFailed(Unprocessable):
    """A search parameter could not be evaluated on a resource: the write is refused rather
    than leaving the resource out of that parameter's index. `subject` says which resource
    (`this Patient` on a write, `Patient/1` when reindexing); never its content."""

    def __init__(self, parameter: SearchParameter, subject: str, cause: str) -> None:
        super().__init__(
            f"Search parameter '{parameter.code}' ({parameter.url}) fails on {subject} "
            f"({cause}), so it cannot be indexed; correct the resource or the "
            "SearchParameter definition",
            expression=[parameter.code],
        )
        self.parameter = parameter
        self.subject = subject
        self.cause = cause


# --- pure value functions (shared with the query parser) ----------------------------------

_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,
)


# A dateTime to the second with a zone (hours up to 14, as `date_range` allows).
_SECONDS_IN_ZONE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-](?:0\d|1[0-4]):[0-5]\d)", re.ASCII
)
_SECOND = timedelta(seconds=1)


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return DATE_MIN if moment.year == 1 else DATE_MAX


@lru_cache(maxsize=2048)
def date_range(text: str) -> tuple[datetime, datetime]:
    """The UTC range [low, high) a FHIR date, dateTime or instant covers, at its precision:
    year, month, day, minute, second or fraction of a second (microseconds at most).

    Without a zone the time is UTC. Raises ValueError for anything else."""
    if _SECONDS_IN_ZONE.fullmatch(text) is not None:
        # Most stored dateTimes: to the second, in a zone. datetime's own parser, six
        # times faster; the edges of its range take the general way.
        try:
            low = datetime.fromisoformat(text).astimezone(UTC)
            return low, low + _SECOND
        except (OverflowError, ValueError):
            pass
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a FHIR date/dateTime/instant: {text!r}")
    g = match.groupdict()
    zone = UTC
    if g["zone"] not in (None, "Z"):
        sign = -1 if g["zone"][0] == "-" else 1
        hours, minutes = int(g["zone"][1:3]), int(g["zone"][4:6])
        if hours > 14 or minutes > 59:
            raise ValueError(f"not a time zone: {g['zone']!r}")
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    year = int(g["year"])
    fraction = g["fraction"] or ""
    low = datetime(
        year,
        int(g["month"] or 1),
        int(g["day"] or 1),
        int(g["hour"] or 0),
        int(g["minute"] or 0),
        int(g["second"] or 0),
        int(fraction[:6].ljust(6, "0")) if fraction else 0,
        tzinfo=zone,
    )
    try:
        if g["month"] is None:
            high = low.replace(year=year + 1)
        elif g["day"] is None:
            high = (
                low.replace(year=year + 1, month=1)
                if low.month == 12
                else low.replace(month=low.month + 1)
            )
        elif g["hour"] is None:
            high = low + timedelta(days=1)
        elif g["second"] is None:
            high = low + timedelta(minutes=1)
        elif not fraction:
            high = low + timedelta(seconds=1)
        else:
            high = low + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
    except (OverflowError, ValueError):
        high = DATE_MAX
    return _utc(low), (high if high is DATE_MAX else _utc(high))


def number_range(
    value: Decimal | int | float | str, *, exponent_form: bool = False
) -> tuple[Decimal, Decimal]:
    """[low, high) of a number at its implicit precision: half a unit of its last digit.

    `exponent_form` is for a searched value written with an exponent, whose range the spec
    takes one digit finer (https://hl7.org/fhir/R4B/search.html#number: `1e2` is
    [95, 105), `1.1e2` [109.5, 110.5)). Stored numbers never have one (see fhirjson)."""
    number = _decimal(value)
    if number is None:
        raise ValueError(f"not a finite number: {value!r}")
    shape = number.as_tuple()
    assert isinstance(shape.exponent, int)
    exponent = shape.exponent - (2 if exponent_form else 1)
    half = _HALVES.get(exponent)
    if half is None:
        half = Decimal(5).scaleb(exponent)
        if len(_HALVES) < 256:
            _HALVES[exponent] = half
    # Exact: the default context would round past 28 significant digits.
    if len(shape.digits) + 3 <= _EXACT.prec:
        return _EXACT.subtract(number, half), _EXACT.add(number, half)
    with localcontext() as exact:
        exact.prec = len(shape.digits) + 3
        return number - half, number + half


# Half a unit of the last digit by exponent, and a context in which the ends of the range of
# a number of up to 61 digits are exact (the result does not depend on the precision then).
_HALVES: dict[int, Decimal] = {}
_EXACT = Context(prec=64)


def normalize_string(text: str) -> str:
    """The form strings are compared in: case folded, accents removed (NFKD without combining
    marks), whitespace runs collapsed to one space, ends trimmed."""
    folded = text.casefold()
    if not folded.isascii():
        decomposed = unicodedata.normalize("NFKD", folded)
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(folded.split())


def _decimal(value: Any) -> Decimal | None:
    if type(value) is bool:
        return None
    try:
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, Decimal):
            number = value
        else:
            number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


# --- converters: values of one parameter into entries -------------------------------------


def _extension_value(element: dict[str, Any]) -> Any:
    """The value[x] of an Extension (`extension(url)` yields Extensions)."""
    for key, value in element.items():
        if key.startswith("value"):
            return value
    return None


def _token(code: str, values: list[Any], out: ResourceIndex, system: str | None = None) -> None:
    """`system` is that of a bare code bound to one code system (see `_converter`)."""
    for value in values:
        kind = type(value)
        if kind is str:
            out.token.append(TokenEntry(code, system, value))
        elif kind is bool:
            out.token.append(TokenEntry(code, None, "true" if value else "false"))
        elif kind is dict:
            _token_element(code, value, out)
        elif kind in (int, Decimal, float):
            out.token.append(TokenEntry(code, None, str(value)))


def _text(value: Any) -> str | None:
    return normalize_string(value) if type(value) is str else None


def _token_element(code: str, element: dict[str, Any], out: ResourceIndex) -> None:
    if "url" in element:
        _token(code, [_extension_value(element)], out)
        return
    if "concept" in element:  # CodeableReference
        _token_element(code, element["concept"], out)
        return
    if "coding" in element or ("text" in element and "value" not in element):
        text = _text(element.get("text"))
        for coding in element.get("coding", ()):
            system, value = coding.get("system"), coding.get("code")
            if system is not None or value is not None:
                display = _text(coding.get("display"))
                if display == text:
                    text = None  # already findable by :text on this row
                out.token.append(TokenEntry(code, system, value, display))
        if text:
            out.token.append(TokenEntry(code, None, None, text))
        return
    if "value" in element:  # Identifier, ContactPoint
        value, system = element["value"], element.get("system")
        kind = element.get("type")
        if type(kind) is dict:
            out.token.append(TokenEntry(code, system, value, _text(kind.get("text"))))
            for coding in kind.get("coding", ()):
                if coding.get("code") is not None:
                    out.identifier_types.append(
                        IdentifierTypeEntry(code, coding.get("system"), coding["code"], value)
                    )
        else:
            out.token.append(TokenEntry(code, system, value))
        return
    if "code" in element or "system" in element:  # Coding
        display = _text(element.get("display"))
        out.token.append(TokenEntry(code, element.get("system"), element.get("code"), display))


# Parts of HumanName, Address and others that a string search matches.
_STRING_PARTS = (
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
    "display",
)


def _string(code: str, values: list[Any], out: ResourceIndex) -> None:
    for value in values:
        if type(value) is str:
            out.string.append(StringEntry(code, normalize_string(value), value))
        elif type(value) is dict:
            if "url" in value:
                _string(code, [_extension_value(value)], out)
                continue
            for key in _STRING_PARTS:
                part = value.get(key)
                if type(part) is str:
                    out.string.append(StringEntry(code, normalize_string(part), part))
                elif type(part) is list:
                    _string(code, part, out)


def _date_of(value: Any) -> tuple[datetime, datetime] | None:
    if type(value) is str:
        try:
            return date_range(value)
        except ValueError:
            return None
    if type(value) is not dict:
        return None
    if "url" in value:
        return _date_of(_extension_value(value))
    if "start" in value or "end" in value:  # Period
        start, end = value.get("start"), value.get("end")
        low = _date_of(start) if start is not None else None
        high = _date_of(end) if end is not None else None
        return (low[0] if low else DATE_MIN, high[1] if high else DATE_MAX)
    if "event" in value or "repeat" in value:  # Timing: only the outer limits count
        ranges = [r for r in map(_date_of, value.get("event", ())) if r]
        bounds = (value.get("repeat") or {}).get("boundsPeriod")
        if bounds:
            bounded = _date_of(bounds)
            if bounded:
                ranges.append(bounded)
        if ranges:
            return min(r[0] for r in ranges), max(r[1] for r in ranges)
    return None


def _date(code: str, values: list[Any], out: ResourceIndex) -> None:
    for value in values:
        found = _date_of(value)
        if found is not None:
            out.date.append(DateEntry(code, found[0], found[1]))


def _range_ends(element: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    low = _decimal((element.get("low") or {}).get("value"))
    high = _decimal((element.get("high") or {}).get("value"))
    if low is None and high is None:
        return None
    return (NEGATIVE_INFINITY if low is None else low, INFINITY if high is None else high)


def _number(code: str, values: list[Any], out: ResourceIndex) -> None:
    for value in values:
        if type(value) is dict:
            if "url" in value:
                _number(code, [_extension_value(value)], out)
            elif "low" in value or "high" in value:
                ends = _range_ends(value)
                if ends:
                    out.number.append(NumberEntry(code, None, ends[0], ends[1]))
            elif "value" in value:
                _number(code, [value["value"]], out)
            continue
        number = _decimal(value)
        if number is not None:
            low, high = number_range(number)
            out.number.append(NumberEntry(code, number, low, high))


def _quantity(code: str, values: list[Any], out: ResourceIndex) -> None:
    for value in values:
        if type(value) is not dict:
            continue
        if "url" in value:
            _quantity(code, [_extension_value(value)], out)
        elif "low" in value or "high" in value:  # Range
            ends = _range_ends(value)
            unit_of = value.get("low") or value.get("high") or {}
            if ends:
                out.quantity.append(
                    QuantityEntry(
                        code,
                        unit_of.get("system"),
                        unit_of.get("code"),
                        unit_of.get("unit"),
                        None,
                        ends[0],
                        ends[1],
                    )
                )
        elif "value" in value:
            number = _decimal(value["value"])
            if number is None:
                continue
            low, high = number_range(number)
            system: str | None
            if "currency" in value:  # Money
                system, unit_code, unit = ISO_4217, value["currency"], value["currency"]
            else:
                system, unit_code, unit = value.get("system"), value.get("code"), value.get("unit")
            out.quantity.append(QuantityEntry(code, system, unit_code, unit, number, low, high))


def add_references(code: str, values: list[Any], out: ResourceIndex) -> None:
    """Reference entries of `values` (Reference elements, canonicals, uris) under `code`."""
    for value in values:
        if type(value) is str:  # canonical or uri
            target_type, target_id, url, version = parse_reference(value)
            out.reference.append(ReferenceEntry(code, target_type, target_id, url, version))
        elif type(value) is dict:
            if "resourceType" in value:
                continue  # an inline resource (Bundle.entry.resource): nothing to point at
            if "url" in value:
                add_references(code, [_extension_value(value)], out)
                continue
            text = value.get("reference")
            if type(text) is dict:  # CodeableReference
                add_references(code, [text], out)
                continue
            if type(text) is str and not text.startswith("#"):
                target_type, target_id, url, version = parse_reference(text)
                out.reference.append(ReferenceEntry(code, target_type, target_id, url, version))
            identifier = value.get("identifier")
            if type(identifier) is dict and identifier.get("value") is not None:
                out.reference_identifiers.append(
                    ReferenceIdentifierEntry(code, identifier.get("system"), identifier["value"])
                )


def _uri(code: str, values: list[Any], out: ResourceIndex) -> None:
    for value in values:
        if type(value) is str:
            out.uri.append(UriEntry(code, value))
        elif type(value) is dict and "url" in value:
            _uri(code, [_extension_value(value)], out)


_Converter = Callable[[str, list[Any], ResourceIndex], None]
_CONVERTERS: dict[str, _Converter] = {
    "token": _token,
    "string": _string,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": add_references,
    "uri": _uri,
}

# --- extraction ---------------------------------------------------------------------------


class _Simple(NamedTuple):
    parameter: SearchParameter
    keys: frozenset[str] | None
    extract: Extractor
    convert: _Converter


class _Component(NamedTuple):
    param: str  # component_param(code, j)
    keys: frozenset[str] | None  # one of which the repetition needs for a value
    extract: Extractor
    on_resource: bool  # `%resource.x`: evaluated on the resource, not on the repetition
    convert: _Converter


class _Composite(NamedTuple):
    parameter: SearchParameter
    keys: frozenset[str] | None
    extract: Extractor  # the repetitions
    components: tuple[_Component, ...]


class _Plan(NamedTuple):
    simple: tuple[_Simple, ...]
    composite: tuple[_Composite, ...]
    stored_elsewhere: frozenset[str]


_plans: weakref.WeakKeyDictionary[SearchParameterRegistry, dict[str, _Plan]] = (
    weakref.WeakKeyDictionary()
)
_RESOURCE_VARIABLE = "%resource."


def _converter(
    registry: SearchParameterRegistry, parameter: SearchParameter, expression: str
) -> Callable[[str, list[Any], ResourceIndex], None]:
    system = registry.code_systems.get(expression) if parameter.type == "token" else None
    if system is not None:
        return partial(_token, system=system)
    return _CONVERTERS[parameter.type]


def composite_components(
    registry: SearchParameterRegistry, parameter: SearchParameter
) -> tuple[SearchParameter, ...] | None:
    """The definitions of a composite parameter's components, in order; None when one is
    unknown or of a type that cannot be indexed (the parameter cannot be searched then)."""
    found: list[SearchParameter] = []
    for url, expression in parameter.component:
        definition = registry.by_url(url)
        if definition is None or definition.type not in _CONVERTERS or not expression:
            return None
        found.append(definition)
    return tuple(found) or None


def _composite_plan(
    registry: SearchParameterRegistry, resource_type: str, parameter: SearchParameter
) -> _Composite | None:
    expression = parameter.expression_for(resource_type)
    definitions = composite_components(registry, parameter)
    if expression is None or definitions is None:
        return None
    components = []
    for position, ((_, relative), definition) in enumerate(
        zip(parameter.component, definitions, strict=True)
    ):
        on_resource = relative.startswith(_RESOURCE_VARIABLE)
        path = resource_type + relative[len(_RESOURCE_VARIABLE) - 1 :] if on_resource else relative
        components.append(
            _Component(
                component_param(parameter.code, position),
                required_keys(path),
                compile_path(path),
                on_resource,
                _CONVERTERS[definition.type],
            )
        )
    return _Composite(
        parameter, required_keys(expression), compile_path(expression), tuple(components)
    )


def _plan(registry: SearchParameterRegistry, resource_type: str) -> _Plan:
    per_type = _plans.get(registry)
    if per_type is None:
        per_type = _plans[registry] = {}
    plan = per_type.get(resource_type)
    if plan is None:
        simple = tuple(
            _Simple(c.parameter, c.keys, c.extract, _converter(registry, c.parameter, c.expression))
            for c in registry.extractors(resource_type)
            if c.parameter.code not in NOT_EXTRACTED and c.parameter.type in _CONVERTERS
        )
        composite = tuple(
            found
            for found in (
                _composite_plan(registry, resource_type, p)
                for p in composite_parameters(registry, resource_type)
            )
            if found is not None
        )
        plan = per_type[resource_type] = _Plan(
            simple, composite, _stored_elsewhere(registry, resource_type, composite)
        )
    return plan


def _stored_elsewhere(
    registry: SearchParameterRegistry, resource_type: str, composite: tuple[_Composite, ...]
) -> frozenset[str]:
    """`ResourceIndex.stored_elsewhere` of a type: the codes `stored_under` names, a
    composite's as the names of its components' entries."""
    codes = registry.stored_under(resource_type)
    names = {
        c.param for found in composite if found.parameter.code in codes for c in found.components
    }
    return frozenset(codes).union(names)


# What a converter raises on values its type cannot take (a bug, or content no validation
# refused): reported as IndexingFailed, never as a silent gap in the index.
_CONVERSION_ERRORS = (ArithmeticError, AttributeError, KeyError, TypeError, ValueError)


def _failed(
    current: SearchParameter | None, resource_type: str, error: Exception
) -> IndexingFailed:
    """The refusal of a resource whose parameter `current` could not be indexed."""
    assert current is not None
    if isinstance(error, FhirPathError):
        return IndexingFailed(current, f"this {resource_type}", error.cause)
    cause = f"{type(error).__name__} while indexing its values"
    return IndexingFailed(current, f"this {resource_type}", cause)


def extract_index(
    resource: dict[str, Any], registry: SearchParameterRegistry, *, generic: bool = False
) -> ResourceIndex:
    """The index entries of a resource for every search parameter of its type.

    Each parameter's entries are free of duplicates; a value that does not fit its
    parameter's type (a date that does not parse, a Quantity without value) is left out.
    Raises IndexingFailed when a parameter's expression fails on the resource.

    Values read by several parameters of the type (`Observation.code` by `code` and
    `combo-code`, `subject` by `subject` and `patient`) are read and converted once, and a
    composite's group for a repetition once (`code-value-quantity` and
    `combo-code-value-quantity`), then copied under each parameter's code. `generic=True`
    evaluates every parameter's whole expression instead: the reference the shared
    evaluation is tested against (tests/resources/test_index_equivalence.py)."""
    if generic:
        return _extract_generic(resource, registry)
    out = ResourceIndex()
    resource_type = resource["resourceType"]
    plan = _shared_plan(registry, resource_type)
    program = plan.program(resource)
    current: SearchParameter | None = None
    operands = plan.operands
    values: list[list[Any] | None] = [None] * len(operands)
    converted: dict[int, list[tuple[list[Any], list[Any]]]] = {}
    try:
        for current, convert, families, reads in program:
            code = current.code
            for slot, shared in reads:
                if shared >= 0:
                    done = converted.get(shared)
                    if done is not None:
                        for family, entries in done:
                            if entries:
                                family.extend([_retag(code, e) for e in entries])
                        continue
                found = values[slot]
                if found is None:
                    extract = operands[slot].extract
                    if extract is not None:
                        found = values[slot] = extract(resource)
                    else:
                        found = plan.evaluate(slot, resource, values)
                if shared < 0:
                    if found:
                        convert(code, found, out)
                    continue
                lists = families(out)
                starts = [len(family) for family in lists]
                if found:
                    convert(code, found, out)
                converted[shared] = [
                    (family, family[start:]) for family, start in zip(lists, starts, strict=True)
                ]
        groups: dict[tuple[int, int], tuple[str, ResourceIndex | None]] = {}
        roots: dict[Extractor, list[Any]] = {}
        for composite, shape in plan.composite:
            current = composite.parameter
            if composite.keys is None or not composite.keys.isdisjoint(resource):
                items = roots.get(composite.extract)
                if items is None:
                    items = roots[composite.extract] = composite.extract(resource)
                _extract_composite(resource, items, composite, out, groups, shape)
    except (FhirPathError, *_CONVERSION_ERRORS) as error:
        raise _failed(current, resource_type, error) from error
    _dedupe_families(out)
    out.stored_elsewhere = plan.stored_elsewhere
    return out


def extract_parameters(
    resource: dict[str, Any], registry: SearchParameterRegistry, codes: Collection[str]
) -> ResourceIndex:
    """The index entries of a resource for the (non-composite) search parameters `codes`
    of its type only, each evaluated on its own: what `extract_index` gives for them, for a
    reader that needs a few parameters of many resources (the subscription matcher)."""
    out = ResourceIndex()
    resource_type = resource["resourceType"]
    current: SearchParameter | None = None
    try:
        for current, keys, extract, convert in _plan(registry, resource_type).simple:
            if current.code not in codes or (keys is not None and keys.isdisjoint(resource)):
                continue
            values = extract(resource)
            if values:
                convert(current.code, values, out)
    except (FhirPathError, *_CONVERSION_ERRORS) as error:
        raise _failed(current, resource_type, error) from error
    _dedupe_families(out)
    return out


def _retag(code: str, entry: Any) -> Any:
    """The same entry under another parameter code (entries are NamedTuples, code first)."""
    return type(entry)(code, *entry[1:])


def _extract_generic(resource: dict[str, Any], registry: SearchParameterRegistry) -> ResourceIndex:
    out = ResourceIndex()
    resource_type = resource["resourceType"]
    plan = _plan(registry, resource_type)
    current: SearchParameter | None = None
    try:
        for current, keys, extract, convert in plan.simple:
            if keys is not None and keys.isdisjoint(resource):
                continue
            values = extract(resource)
            if values:
                convert(current.code, values, out)
        roots: dict[Extractor, list[Any]] = {}  # several composites share their repetitions
        for composite in plan.composite:
            current = composite.parameter
            if composite.keys is None or not composite.keys.isdisjoint(resource):
                items = roots.get(composite.extract)
                if items is None:
                    items = roots[composite.extract] = composite.extract(resource)
                _extract_composite(resource, items, composite, out)
    except (FhirPathError, *_CONVERSION_ERRORS) as error:
        raise _failed(current, resource_type, error) from error
    _dedupe_families(out)
    out.stored_elsewhere = plan.stored_elsewhere
    return out


# --- the shared plan: each union operand read once per resource ---------------------------

_Families = Callable[[ResourceIndex], tuple[list[Any], ...]]
# The lists of a ResourceIndex each converter appends to.
_FAMILIES: dict[str, _Families] = {
    "token": lambda out: (out.token, out.identifier_types),
    "string": lambda out: (out.string,),
    "date": lambda out: (out.date,),
    "number": lambda out: (out.number,),
    "quantity": lambda out: (out.quantity,),
    "reference": lambda out: (out.reference, out.reference_identifiers),
    "uri": lambda out: (out.uri,),
}
# A Read is (slot of the operand's values, slot of its converted entries when another
# parameter converts the same operand the same way, else -1).
_Read = tuple[int, int]
_Step = tuple[SearchParameter, _Converter, _Families, tuple[_Read, ...]]
# Programs kept per type: one per distinct set of top-level keys (resources of one type
# written by one system have few); past this many, programs are built and not kept.
_MAX_PROGRAMS = 512


class _Operand(NamedTuple):
    keys: frozenset[str] | None
    extract: Extractor | None  # None for a `where(resolve() is T)` filter of `base`
    base: int
    resolve_type: str | None


class _SharedPlan:
    """The parameters of one type as reads of union operands (`_Operand`) shared between
    them, and for each set of top-level keys a resource has, the steps that can yield
    something on it (the others are skipped without a test per parameter)."""

    def __init__(
        self,
        steps: list[tuple[SearchParameter, _Converter, _Families, tuple[_Read, ...]]],
        operands: list[_Operand],
        composite: tuple[tuple[_Composite, int], ...],
        stored_elsewhere: frozenset[str],
    ) -> None:
        self.steps = steps
        self.operands = operands
        self.composite = composite
        self.stored_elsewhere = stored_elsewhere
        self._programs: dict[frozenset[str], tuple[_Step, ...]] = {}

    def program(self, resource: dict[str, Any]) -> tuple[_Step, ...]:
        present = frozenset(resource)
        found = self._programs.get(present)
        if found is None:
            found = tuple(self._select(present))
            if len(self._programs) < _MAX_PROGRAMS:
                self._programs[present] = found
        return found

    def _select(self, present: frozenset[str]) -> list[_Step]:
        selected = []
        for parameter, convert, families, reads in self.steps:
            kept = tuple(
                read
                for read in reads
                if (keys := self.operands[read[0]].keys) is None or not keys.isdisjoint(present)
            )
            if kept:
                selected.append((parameter, convert, families, kept))
        return selected

    def evaluate(
        self, slot: int, resource: dict[str, Any], values: list[list[Any] | None]
    ) -> list[Any]:
        operand = self.operands[slot]
        if operand.extract is not None:
            found = operand.extract(resource)
        else:
            base = values[operand.base]
            if base is None:
                base = self.evaluate(operand.base, resource, values)
            wanted = operand.resolve_type
            found = [v for v in base if reference_type(v) == wanted]
        values[slot] = found
        return found


def _operand_slot(
    operands: list[_Operand], slots: dict[tuple[str, str | None], int], base: str, kind: str | None
) -> int:
    slot = slots.get((base, kind))
    if slot is None:
        if kind is None:
            operand = _Operand(required_keys(base), compile_on_type(base), -1, None)
        else:
            of = _operand_slot(operands, slots, base, None)
            operand = _Operand(operands[of].keys, None, of, kind)
        slot = slots[(base, kind)] = len(operands)
        operands.append(operand)
    return slot


_shared_plans: weakref.WeakKeyDictionary[SearchParameterRegistry, dict[str, _SharedPlan]] = (
    weakref.WeakKeyDictionary()
)


def _shared_plan(registry: SearchParameterRegistry, resource_type: str) -> _SharedPlan:
    per_type = _shared_plans.get(registry)
    if per_type is None:
        per_type = _shared_plans[registry] = {}
    plan = per_type.get(resource_type)
    if plan is None:
        plan = per_type[resource_type] = _build_shared_plan(registry, resource_type)
    return plan


def _build_shared_plan(registry: SearchParameterRegistry, resource_type: str) -> _SharedPlan:
    operands: list[_Operand] = []
    slots: dict[tuple[str, str | None], int] = {}
    raw: list[tuple[SearchParameter, _Converter, list[tuple[int, Any]]]] = []
    for simple in _plan(registry, resource_type).simple:
        parameter = simple.parameter
        expression = parameter.expression_for(resource_type)
        assert expression is not None
        branches = union_branches(expression)
        if branches is None:  # evaluated whole, as its own operand
            slot = slots[(expression, "")] = len(operands)
            operands.append(_Operand(simple.keys, simple.extract, -1, None))
            raw.append((parameter, simple.convert, [(slot, simple.convert)]))
            continue
        reads = [
            (_operand_slot(operands, slots, b.base, b.resolve_type), simple.convert)
            for b in branches
        ]
        raw.append((parameter, simple.convert, reads))
    # A conversion (operand, converter) made by several parameters is made once.
    uses: dict[tuple[int, Any], int] = {}
    for _, _, reads in raw:
        for read in dict.fromkeys(reads):
            uses[read] = uses.get(read, 0) + 1
    shared = {read: n for n, read in enumerate(r for r, count in uses.items() if count > 1)}
    steps = [
        (
            parameter,
            convert,
            _FAMILIES[parameter.type],
            tuple((slot, shared.get((slot, conv), -1)) for slot, conv in reads),
        )
        for parameter, convert, reads in raw
    ]
    shapes: dict[tuple[Any, ...], int] = {}
    composite = []
    for found in _plan(registry, resource_type).composite:
        shape = tuple((c.extract, c.on_resource, c.convert) for c in found.components)
        composite.append((found, shapes.setdefault(shape, len(shapes))))
    stored_elsewhere = _plan(registry, resource_type).stored_elsewhere
    return _SharedPlan(steps, operands, tuple(composite), stored_elsewhere)


def _families(index: ResourceIndex) -> tuple[list[Any], ...]:
    return (
        index.token,
        index.string,
        index.date,
        index.number,
        index.quantity,
        index.reference,
        index.uri,
        index.reference_identifiers,
        index.identifier_types,
    )


def _extract_composite(
    resource: dict[str, Any],
    items: list[Any],
    plan: _Composite,
    out: ResourceIndex,
    groups: dict[tuple[int, int], tuple[str, ResourceIndex | None]] | None = None,
    shape: int = 0,
) -> None:
    """One CompositeGroup per repetition (of `items`) in which every component has a value:
    a repetition missing one can never match. With `groups`, the group of a repetition
    under composites of the same components (`shape`) is built once and copied."""
    for item in items:
        if type(item) is not dict:
            continue
        if groups is not None:
            known = groups.get((id(item), shape))
            if known is not None:
                code, group = known
                if group is not None:
                    copy = _renamed(group, code, plan.parameter.code)
                    out.composite.append(CompositeGroup(len(out.composite), copy))
                continue
        built = _group_of(resource, item, plan)
        if built is not None:
            out.composite.append(CompositeGroup(len(out.composite), built))
        if groups is not None:
            groups[(id(item), shape)] = (plan.parameter.code, built)


def _group_of(
    resource: dict[str, Any], item: dict[str, Any], plan: _Composite
) -> ResourceIndex | None:
    for component in plan.components:  # first the cheap test of every component
        keys = component.keys
        if keys is not None and keys.isdisjoint(resource if component.on_resource else item):
            return None
    found = []
    for component in plan.components:
        values = component.extract(resource if component.on_resource else item)
        if not values:
            return None
        found.append(values)
    return _group(plan, found)


def _group(plan: _Composite, found: list[list[Any]]) -> ResourceIndex | None:
    """The group of one repetition's component values, unless one of them does not fit its
    type (a date that does not parse)."""
    group = ResourceIndex()
    for component, values in zip(plan.components, found, strict=True):
        component.convert(component.param, values, group)
    _dedupe_families(group)
    params = {entry.param for entries in _families(group) for entry in entries}
    return group if len(params) == len(plan.components) else None


def _renamed(group: ResourceIndex, old: str, new: str) -> ResourceIndex:
    """A composite's group under another composite's code (`old$j` becomes `new$j`)."""
    size = len(old)
    copy = ResourceIndex()
    for source, target in zip(_families(group), _families(copy), strict=True):
        target.extend([_retag(new + e.param[size:], e) for e in source])
    return copy


def _dedupe_families(index: ResourceIndex) -> None:
    for entries in _families(index):
        if len(entries) > 1:
            entries[:] = dict.fromkeys(entries)


def composite_parameters(
    registry: SearchParameterRegistry, resource_type: str
) -> tuple[SearchParameter, ...]:
    """The composite parameters of a type (each component names a parameter definition and
    an expression relative to the repetition its own expression selects)."""
    return tuple(p for p in registry.for_type(resource_type).values() if p.type == "composite")
