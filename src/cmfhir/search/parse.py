"""Parsing a search query string into a `SearchRequest`
(https://hl7.org/fhir/R4B/search.html): value syntax, prefixes, modifiers, escaping, and the
result parameters. Pure: no database; errors name the parameter."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

from cmfhir.errors import BadRequest, Issue
from cmfhir.resources.index_values import (
    component_param,
    composite_components,
    date_range,
    normalize_string,
    number_range,
)
from cmfhir.resources.search_parameters import SearchParameter, SearchParameterRegistry
from cmfhir.resources.types import is_resource_type
from cmfhir.search.model import (
    Chain,
    CompositeValue,
    Criterion,
    DateValue,
    Has,
    Include,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchRequest,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)

__all__ = ["RESULT_PARAMS", "parse_search", "selection_query", "split_escaped"]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUMMARY_VALUES = {"true", "false", "count", "data", "text"}
TOTAL_VALUES = {"none", "estimate", "accurate"}
# Parameters that shape the result rather than select resources
# (https://hl7.org/fhir/R4B/search.html#Summary): they never make a create conditional.
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_summary",
        "_total",
        "_sort",
        "_elements",
        "_cursor",
        "_format",
        "_pretty",
        "_include",
        "_revinclude",
        "_contained",
        "_containedType",
        "_totalMethod",
    }
)
# Aidbox's name for _total, which clients such as fhirpy's `count()` send.
TOTAL_METHODS = {"count": "accurate", "estimate": "estimate", "none": "none"}
CONTAINED_VALUES = {"false", "true", "both"}
CONTAINED_TYPE_VALUES = {"container", "contained"}
MODIFIERS = {
    "string": {"exact", "contains", "missing"},
    "token": {"missing", "not", "text", "of-type"},
    "reference": {"missing", "identifier"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"missing", "below", "above"},
    "id": {"missing", "not"},
    "lastUpdated": {"missing"},
    "composite": set(),
    "type": set(),
}
# Modifiers of the spec that need a terminology server; refused as not supported.
KNOWN_UNSUPPORTED = {"in", "not-in", "below", "above", "type", "iterate"}
SORTABLE = {"string", "token", "date", "number", "quantity", "reference", "uri"}
MAX_CHAIN_DEPTH = 4
# Each criterion is a join for PostgreSQL's planner, whose work grows steeply with their
# number (100 take 0.4 s to plan, 200 take 6 s): a search names at most this many.
MAX_CRITERIA = 40
_ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


def split_escaped(value: str, sep: str) -> list[str]:
    """Split on `sep` unless escaped with a backslash; unescape `\\,` `\\|` `\\$` `\\\\`."""
    if "\\" not in value:  # nothing escaped: the common case, without the loop
        return value.split(sep)
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt in (",", "|", "$", "\\"):
                if nxt == sep:
                    current.append(nxt)
                else:
                    current.append("\\" + nxt)
                continue
            current.append(ch + nxt)
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return re.sub(r"\\([,|$\\])", r"\1", value)


def _split_or(value: str) -> list[str]:
    return split_escaped(value, ",")


def _prefix(name: str, raw: str) -> tuple[str, str]:
    match = _PREFIX_RE.match(raw)
    if match:
        return match.group(1), raw[2:]
    return "eq", raw


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"Invalid value for search parameter '{name}': {message}", expression=[name])


def _date(name: str, raw: str) -> DateValue:
    prefix, text = _prefix(name, raw)
    try:
        low, high = date_range(text)
    except ValueError as error:
        raise _bad(name, f"'{raw}' is not a FHIR date, dateTime or instant") from error
    return DateValue(prefix, low, high)


def _decimal_range(name: str, text: str) -> tuple[Decimal, Decimal, Decimal]:
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise _bad(name, f"'{text}' is not a number") from error
    if not value.is_finite():
        raise _bad(name, f"'{text}' is not a finite number")
    # The implicit precision, as values are indexed (one digit finer for `1e2`, as the spec's
    # table has it).
    low, high = number_range(value, exponent_form="e" in text or "E" in text)
    return value, low, high


def _number(name: str, raw: str) -> NumberValue:
    prefix, text = _prefix(name, raw)
    value, low, high = _decimal_range(name, text)
    return NumberValue(prefix, value, low, high)


def _quantity(name: str, raw: str) -> QuantityValue:
    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise _bad(name, f"'{raw}' is not [prefix]number|system|code")
    prefix, text = _prefix(name, parts[0])
    value, low, high = _decimal_range(name, text)
    system = code = None
    if len(parts) == 3:
        system = _unescape(parts[1]) or None
        code = _unescape(parts[2]) or None
    return QuantityValue(prefix, value, low, high, system, code)


def _token(name: str, raw: str) -> TokenValue:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, _unescape(parts[0]) or None)
    if len(parts) == 2:
        return TokenValue(_unescape(parts[0]), _unescape(parts[1]) or None)
    raise _bad(name, f"'{raw}' has more than one unescaped '|'")


def _of_type(name: str, raw: str) -> TokenValue:
    """`identifier:of-type=type-system|type-code|value`, matched against the identifier's
    type coding and value (indexed under `identifier:of-type` as system `s|c`)."""
    parts = split_escaped(raw, "|")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise _bad(name, f"'{raw}' is not type-system|type-code|value")
    return TokenValue(f"{_unescape(parts[0])}|{_unescape(parts[1])}", _unescape(parts[2]))


def _reference(name: str, raw: str, modifier: str | None, param: SearchParameter) -> ReferenceValue:
    value = _unescape(raw)
    if modifier and modifier != "identifier":
        if "/" in value:
            raise _bad(name, f"'{raw}' must be a bare id with the :{modifier} modifier")
        return ReferenceValue(modifier, value, None)
    if value.startswith(("http://", "https://", "urn:")):
        return ReferenceValue(None, None, value.split("|", 1)[0])
    pieces = value.split("/")
    if len(pieces) == 2 and is_resource_type(pieces[0]):
        return ReferenceValue(pieces[0], pieces[1], None)
    if len(pieces) == 4 and pieces[2] == "_history" and is_resource_type(pieces[0]):
        return ReferenceValue(pieces[0], pieces[1], None)
    if len(pieces) == 1 and _ID_RE.match(value):
        only = param.target[0] if len(param.target) == 1 else None
        return ReferenceValue(only, value, None)
    raise _bad(name, f"'{raw}' is not a reference (Type/id, id or an absolute URL)")


def _values(
    name: str, kind: str, modifier: str | None, raw: str, param: SearchParameter | None
) -> tuple[Value, ...]:
    out: list[Value] = []
    for piece in _split_or(raw):
        if piece == "":
            raise _bad(name, "empty value")
        if kind in ("date", "lastUpdated"):
            out.append(_date(name, piece))
        elif kind == "number":
            out.append(_number(name, piece))
        elif kind == "quantity":
            out.append(_quantity(name, piece))
        elif kind == "token" and modifier == "text":
            text = _unescape(piece)
            out.append(StringValue(normalize_string(text), text))
        elif kind == "token" and modifier == "of-type":
            out.append(_of_type(name, piece))
        elif kind == "token" or kind == "id":
            out.append(
                _token(name, piece) if kind == "token" else TokenValue(None, _unescape(piece))
            )
        elif kind == "string":
            text = _unescape(piece)
            out.append(StringValue(normalize_string(text), text))
        elif kind == "reference":
            assert param is not None
            if modifier == "identifier":
                out.append(_token(name, piece))
            else:
                out.append(_reference(name, piece, modifier, param))
        elif kind == "uri":
            out.append(UriValue(_unescape(piece)))
        else:
            raise BadRequest(
                f"Search parameter '{name}' of type {kind} is not supported",
                expression=[name],
            )
    return tuple(out)


def _positive_int(name: str, raw: str, *, allow_zero: bool) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise _bad(name, f"'{raw[:40]}' is not a non-negative integer")
    # Past nine digits it is larger than any limit: no need to convert it (Python refuses
    # integers of more than 4,300 digits).
    digits = raw.lstrip("0") or "0"
    number = int(digits) if len(digits) <= 9 else 10**9
    if number == 0 and not allow_zero:
        raise _bad(name, "must be greater than zero")
    return number


def parse_search(
    registry: SearchParameterRegistry,
    resource_type: str | None,
    params: Iterable[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 1000,
    strict: bool = True,
) -> SearchRequest:
    """Parse `name=value` pairs (already percent-decoded) for a type or system search.

    An unknown or unsupported parameter is refused (400, naming the closest known one)
    when `strict`, as `Prefer: handling=strict` (the default) asks; otherwise
    (`handling=lenient`) it is ignored, reported in `warnings` and left out of `echo`
    (https://hl7.org/fhir/R4B/search.html#errors)."""
    request = SearchRequest(resource_type=resource_type, count=default_count)
    joined = 0
    known = registry.for_type(resource_type or "Resource")
    for name, raw in params:
        if name == "_cursor":
            request.cursor = raw
            continue
        try:
            criterion = _parameter(registry, request, known, name, raw, max_count=max_count)
        except _Unknown as unknown:
            if strict:
                raise BadRequest(unknown.message, code="not-supported", expression=[name]) from None
            request.warnings.append(
                Issue(
                    f"{unknown.message}; it was ignored",
                    code="not-supported",
                    severity="warning",
                    expression=(name,),
                )
            )
            continue
        request.echo.append((name, raw))
        if criterion is not None:
            request.criteria.append(criterion)
            joined += _weight(criterion)
            if joined > MAX_CRITERIA:
                raise BadRequest(
                    f"The search has more than {MAX_CRITERIA} criteria (counting each link "
                    "of a chain or _has); narrow it or split it",
                    code="too-costly",
                    expression=[name],
                )
    return request


def _parameter(
    registry: SearchParameterRegistry,
    request: SearchRequest,
    known: Mapping[str, SearchParameter],
    name: str,
    raw: str,
    *,
    max_count: int,
) -> Criterion | None:
    """Apply one result parameter to `request`, or parse a criterion (returned)."""
    if name == "_count":
        request.count = min(_positive_int(name, raw, allow_zero=True), max_count)
    elif name == "_summary":
        if raw not in SUMMARY_VALUES:
            raise _bad(name, f"'{raw}' is not one of {', '.join(sorted(SUMMARY_VALUES))}")
        request.summary = raw
    elif name == "_total":
        if raw not in TOTAL_VALUES:
            raise _bad(name, f"'{raw}' is not one of {', '.join(sorted(TOTAL_VALUES))}")
        request.total = raw
    elif name == "_totalMethod":
        if raw not in TOTAL_METHODS:
            raise _bad(name, f"'{raw}' is not one of {', '.join(sorted(TOTAL_METHODS))}")
        request.total = request.total or TOTAL_METHODS[raw]
    elif name == "_elements":
        request.elements.extend(e.strip() for e in raw.split(",") if e.strip())
    elif name == "_sort":
        request.sort = [
            _sort_key(known, key, registry.stored_under(request.resource_type or "Resource"))
            for key in raw.split(",")
        ]
    elif name.split(":")[0] in ("_include", "_revinclude"):
        include = _include(registry, name, raw)
        (request.revinclude if include.reverse else request.include).append(include)
    elif name in ("_format", "_pretty"):
        pass
    elif name == "_contained":
        _check_default(name, raw, CONTAINED_VALUES, "false")
    elif name == "_containedType":
        _check_default(name, raw, CONTAINED_TYPE_VALUES, "container")
    else:
        return _criterion(registry, request.resource_type, name, raw)
    return None


def _check_default(name: str, raw: str, values: set[str], default: str) -> None:
    """A result parameter of which only the default behaviour is supported."""
    if raw not in values:
        raise _bad(name, f"'{raw}' is not one of {', '.join(sorted(values))}")
    if raw != default:
        raise _Unknown(f"{name}={raw} is not supported (contained resources are not searched)")


def selection_query(query: str) -> str | None:
    """The query of a create when it selects something, else None: result parameters
    (`_format`, `_pretty`, `_count`...) alone never make a create conditional."""
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    if all(name.split(":")[0] in RESULT_PARAMS for name in names):
        return None
    return query


def _weight(criterion: Criterion) -> int:
    """How many index lookups a criterion costs the query planner (chains and _has nest)."""
    inner = [link.criterion for link in criterion.chain]
    if criterion.has is not None:
        inner.append(criterion.has.criterion)
    inner.extend(c for v in criterion.values if isinstance(v, CompositeValue) for c in v.components)
    return 1 + sum(_weight(c) for c in inner)


def _include(registry: SearchParameterRegistry, name: str, raw: str) -> Include:
    """`_include[:iterate]=Source:param[:Target]`; `*` alone includes along every reference."""
    base, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise _bad(name, f"':{modifier}' is not a modifier of {base} (only :iterate)")
    reverse = base == "_revinclude"
    if raw == "*":
        return Include("*", "*", None, bool(modifier), reverse)
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise _bad(name, f"'{raw}' is not SourceType:parameter[:TargetType]")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if not is_resource_type(source):
        raise _bad(name, f"'{source}' is not a resource type")
    if target is not None and not is_resource_type(target):
        raise _bad(name, f"'{target}' is not a resource type")
    if code != "*":
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise _bad(name, f"'{code}' is not a reference search parameter of {source}")
    return Include(source, code, target, bool(modifier), reverse)


def _sort_key(
    known: Mapping[str, SearchParameter], key: str, stored: Mapping[str, tuple[str, ...]]
) -> SortKey:
    descending = key.startswith("-")
    code = key[1:] if descending else key
    if code == "_id":
        return SortKey(code, descending, "id")
    if code == "_lastUpdated":
        return SortKey(code, descending, "lastUpdated")
    param = known.get(code)
    if param is None or param.type not in SORTABLE or param.expression is None:
        raise _bad("_sort", f"cannot sort by '{code}': not a sortable search parameter here")
    return SortKey(code, descending, param.type, stored.get(code, ()))


class _Unknown(Exception):
    """A parameter this server does not know or support, with the message for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Names every search takes besides the parameters of its type.
_COMMON_NAMES = ("_id", "_lastUpdated", "_has", *sorted(RESULT_PARAMS - {"_cursor"}))


def _unknown(
    registry: SearchParameterRegistry,
    name: str,
    resource_type: str | None,
    detail: str = "",
) -> _Unknown:
    """The error for an unknown `name`, with the known parameter closest to its code as a
    suggestion: `nmae` → did you mean `name`?"""
    code = name.split(":", 1)[0]
    where = resource_type or "system-level search"
    message = f"Unknown search parameter '{name}' for {where}{detail}"
    candidates = [*registry.for_type(resource_type or "Resource"), *_COMMON_NAMES]
    if resource_type is None:
        candidates.append("_type")
    close = difflib.get_close_matches(code, candidates, n=1, cutoff=0.6)
    if close and close[0] != code:
        message += f"; did you mean '{close[0]}'?"
    return _Unknown(message)


def _criterion(
    registry: SearchParameterRegistry,
    resource_type: str | None,
    name: str,
    raw: str,
    *,
    depth: int = 0,
) -> Criterion:
    """One `name=value` as a criterion on `resource_type`; raises _Unknown for a parameter
    the type does not have (or that cannot be searched)."""
    if depth > MAX_CHAIN_DEPTH:
        raise _bad(name, f"chains and _has nest at most {MAX_CHAIN_DEPTH} levels deep")
    if name.startswith("_has:"):
        return _has(registry, resource_type, name, raw, depth=depth)
    head, dot, rest = name.partition(".")
    if dot:
        return _chain(registry, resource_type, head, rest, raw, depth=depth)
    code, _, modifier_text = name.partition(":")
    modifier = modifier_text or None
    param: SearchParameter | None = None
    if code == "_id":
        kind = "id"
    elif code == "_lastUpdated":
        kind = "lastUpdated"
    elif code == "_type" and resource_type is None:
        kind = "type"
    else:
        param = registry.for_type(resource_type or "Resource").get(code)
        if param is None:
            raise _unknown(registry, name, resource_type)
        if param.type == "special" or (param.type != "composite" and param.expression is None):
            raise _Unknown(
                f"Search parameter '{code}' of {resource_type or 'system-level search'} "
                "is not supported (it has no expression to index)"
            )
        kind = param.type
    if modifier is not None:
        allowed = MODIFIERS.get(kind, {"missing"})
        is_type_modifier = kind == "reference" and is_resource_type(modifier)
        if modifier not in allowed and not is_type_modifier:
            raise BadRequest(
                f"Modifier ':{modifier}' is not supported for search parameter '{code}' "
                f"of type {kind}",
                code="not-supported" if modifier in KNOWN_UNSUPPORTED else "invalid",
                expression=[name],
            )
    # A parameter whose rows are other parameters' (store/indexing.py) is searched in theirs.
    stored = registry.stored_under(resource_type or "Resource").get(code, ())
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise _bad(name, "':missing' takes true or false")
        return Criterion(code, kind, modifier, (), missing=raw == "true", stored=stored)
    if kind == "type":
        types = tuple(TokenValue(None, t) for t in _split_or(raw))
        for t in types:
            if not is_resource_type(t.code or ""):
                raise _bad(name, f"'{t.code}' is not a resource type")
        return Criterion(code, kind, None, types)
    if kind == "composite":
        assert param is not None
        values = _composite(registry, name, raw, param, stored)
        return Criterion(code, kind, modifier, values, stored=stored)
    return Criterion(code, kind, modifier, _values(name, kind, modifier, raw, param), stored=stored)


def _composite(
    registry: SearchParameterRegistry,
    name: str,
    raw: str,
    param: SearchParameter,
    stored: tuple[str, ...] = (),
) -> tuple[Value, ...]:
    """`code-value-quantity=http://loinc.org|8480-6$gt100`: one value per component, all
    to be found in the same repetition (indexed under `component_param(code, j)`)."""
    parts_of = composite_components(registry, param)
    if parts_of is None:
        return _unsupported(name, "its components are not all known")
    values: list[Value] = []
    for piece in _split_or(raw):
        pieces = split_escaped(piece, "$")
        if len(pieces) != len(parts_of):
            raise _bad(name, f"'{piece}' needs {len(parts_of)} values separated by '$'")
        components = tuple(
            Criterion(
                component_param(param.code, position),
                component.type,
                None,
                _values(name, component.type, None, text, component),
                stored=tuple(component_param(other, position) for other in stored),
            )
            for position, (component, text) in enumerate(zip(parts_of, pieces, strict=True))
        )
        values.append(CompositeValue(components))
    return tuple(values)


def _unsupported(name: str, why: str) -> tuple[Value, ...]:
    raise BadRequest(
        f"Search parameter '{name}' cannot be searched: {why}",
        code="not-supported",
        expression=[name],
    )


def _chain(
    registry: SearchParameterRegistry,
    resource_type: str | None,
    head: str,
    rest: str,
    raw: str,
    *,
    depth: int,
) -> Criterion:
    """`subject:Patient.name=x`: the reference's target must match the rest of the name."""
    code, _, type_modifier = head.partition(":")
    param = registry.for_type(resource_type or "Resource").get(code)
    if param is None or param.type != "reference":
        raise _unknown(registry, head, resource_type, " (only reference parameters chain)")
    if type_modifier and not is_resource_type(type_modifier):
        raise _bad(head, f"'{type_modifier}' is not a resource type")
    targets = (type_modifier,) if type_modifier else param.target
    links: list[Chain] = []
    unknown: _Unknown | None = None
    for target in targets:
        try:
            links.append(Chain(target, _criterion(registry, target, rest, raw, depth=depth + 1)))
        except _Unknown as error:
            unknown = error
    if not links:
        if (type_modifier or len(targets) == 1) and unknown is not None:
            raise _Unknown(f"{unknown.message} (in the chain '{head}.{rest}')")
        raise _Unknown(
            f"'{rest}' is not a search parameter of any target of '{head}' "
            f"({', '.join(targets)}); name the target type ({code}:Type.{rest})"
        )
    return Criterion(code, "chain", type_modifier or None, (), chain=tuple(links))


def _has(
    registry: SearchParameterRegistry,
    resource_type: str | None,
    name: str,
    raw: str,
    *,
    depth: int,
) -> Criterion:
    """`_has:Observation:patient:code=x`: some Observation whose `patient` points here."""
    parts = name.split(":", 3)
    if len(parts) != 4 or not parts[3]:
        raise _bad(name, "_has takes _has:Type:reference-parameter:parameter=value")
    _, source, ref_code, inner_name = parts
    if not is_resource_type(source):
        raise _bad(name, f"'{source}' is not a resource type")
    ref = registry.get(source, ref_code)
    if ref is None or ref.type != "reference":
        raise _bad(name, f"'{ref_code}' is not a reference search parameter of {source}")
    if resource_type is not None and ref.target and resource_type not in ref.target:
        raise _bad(name, f"{source}.{ref_code} never points at {resource_type}")
    try:
        inner = _criterion(registry, source, inner_name, raw, depth=depth + 1)
    except _Unknown as error:
        raise _Unknown(f"{error.message} (in '{name}')") from None
    return Criterion("_has", "has", None, (), has=Has(source, ref_code, inner))


def parse_instant(name: str, raw: str) -> datetime:
    """`_since` and `_at` of history: a FHIR instant (or any dateTime; its start is used)."""
    try:
        return date_range(raw)[0]
    except ValueError as error:
        raise _bad(name, f"'{raw}' is not a FHIR instant") from error
