"""FHIR JSON in and out: strict parsing with exact decimals, and compact serialization.

Implements the JSON representation rules of https://hl7.org/fhir/R4B/json.html (UTF-8, no
duplicate keys, decimals keep their precision) plus what PostgreSQL JSONB needs (no NUL
characters, no lone surrogates, numbers within `numeric`'s range). Named `fhirjson` so it
never shadows the stdlib `json`.

Parsing uses the stdlib C decoder with hooks: 55-80 µs for a 5 KB Synthea
ExplanationOfBenefit (orjson takes 9 µs but cannot keep decimal text exact); serializing
with orjson takes 10 µs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from itertools import accumulate
from typing import Any, NoReturn

import orjson

from cmfhir.errors import BadRequest, PayloadTooLarge

__all__ = [
    "MAX_CONTAINERS",
    "MAX_EXPONENT_ZEROS",
    "MAX_NUMBER_DIGITS",
    "RawJson",
    "dump_json",
    "parse_json",
]

# Already-serialized JSON (a stored resource's text) that dump_json embeds as it is, so a
# search Bundle does not parse and re-serialize every match: `RawJson(content_bytes)`.
RawJson = orjson.Fragment

# --- parsing -------------------------------------------------------------------------------

# Everything but brackets and quotes, deleted to measure nesting without decoding.
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'[]{}"')
_BACKSLASH_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTED = re.compile(rb'"[^"]*"')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# A \uXXXX escape, or an escaped backslash consumed first so `\\u0000` is not mistaken for one.
_UNICODE_ESCAPE = re.compile(r"\\\\|\\u([0-9a-fA-F]{4})")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NON_FINITE = re.compile(r"-?(?:NaN|Infinity)")


# Digits a number may have before and after its decimal point, written out. JSONB stores
# numbers as `numeric` and serves them written out (`1e400` comes back as 401 digits), so
# this is Python's own limit for integer text (sys.int_info.default_max_str_digits), which
# the stored JSON must parse back within; `numeric` itself takes 131072 and 16383.
MAX_NUMBER_DIGITS = 4300


# Objects and arrays one body may hold. Parsed, each takes 60-250 bytes before its content
# (8 MiB of `{}` became 205 MiB): this bounds what a body made of tiny containers costs,
# and is about twice what 64 MiB of real FHIR JSON holds (one per ~50 bytes).
MAX_CONTAINERS = 2_000_000


class _TooManyEntries(Exception):
    pass


class _NumberOutOfRange(Exception):
    def __init__(self, text: str, *, exponent: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.exponent = exponent


# JSONB keeps a number as `numeric`, always written out in fixed point (`1E+2` is stored
# and served as `100`, `1e400` as 401 digits). So that what is validated, indexed, stored
# and served is one value, a number written with an exponent becomes that fixed-point value
# here (`1.50E+1` → 15.0, `1E+2` → 100, `1.5E-7` → 0.00000015); one whose fixed-point form
# would need more than this many zeros (`1e400`, `1e-400`) is refused rather than
# expanded (see _NumberOutOfRange).
MAX_EXPONENT_ZEROS = 64


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    # Without an exponent the length of the text bounds the digits.
    if len(text) > MAX_NUMBER_DIGITS or "e" in text or "E" in text:
        exponent = value.as_tuple().exponent
        if value.adjusted() >= MAX_NUMBER_DIGITS or (
            isinstance(exponent, int) and exponent < -MAX_NUMBER_DIGITS
        ):
            raise _NumberOutOfRange(text)
        if "e" in text or "E" in text:
            return _fixed_point(text, value)
    if value.is_zero() and value.is_signed():
        return value.copy_abs()  # numeric has no negative zero: -0.0 is stored as 0.0
    return value


def _fixed_point(text: str, value: Decimal) -> Decimal:
    """A number written with an exponent, as `numeric` keeps it (see MAX_EXPONENT_ZEROS)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if not value.is_zero() and (
        exponent > MAX_EXPONENT_ZEROS or value.adjusted() < -MAX_EXPONENT_ZEROS
    ):
        raise _NumberOutOfRange(text, exponent=True)
    if exponent > 0:
        value = Decimal(int(value))  # 1E+2 → 100: numeric keeps no positive exponent
    return value.copy_abs() if value.is_zero() else value


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _counting_entries(limit: int) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An object hook that stops the parse once more than `limit` Bundle entries (objects
    whose `request` holds a `method`) have been read, so an oversized Bundle is refused
    before the rest of it is built."""
    count = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        obj = _object(pairs)
        request = obj.get("request")
        if type(request) is dict and "method" in request:
            count += 1
            if count > limit:
                raise _TooManyEntries
        return obj

    return hook


def _strip_strings(raw: bytes) -> bytes:
    """Only the brackets of a JSON text, string contents removed (no decoding)."""
    if b"\\" in raw:
        raw = _BACKSLASH_ESCAPE.sub(b"", raw)
    skeleton = raw.translate(None, _NOT_STRUCTURAL)
    # Strings holding no brackets leave `""`; only strings holding brackets need the regex.
    brackets = skeleton.replace(b'""', b"")
    if b'"' in brackets:
        brackets = _QUOTED.sub(b"", skeleton)
    return brackets


def _containers(raw: bytes) -> int:
    """How many objects and arrays a JSON text holds; brackets in strings do not count."""
    rough = raw.count(b"{") + raw.count(b"[")
    if rough <= MAX_CONTAINERS:
        return rough
    brackets = _strip_strings(raw)
    return brackets.count(b"{") + brackets.count(b"[")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(name)


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


def _depth(raw: bytes) -> int:
    """Deepest bracket nesting of a JSON text, counted without the Python recursion a
    decoder would need (the C decoder itself stops only at the interpreter's limit)."""
    brackets = _strip_strings(raw)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _check_escapes(text: str) -> None:
    """Reject `\\u0000` (JSONB cannot store NUL) and unpaired UTF-16 surrogate escapes
    (not Unicode text, so not valid FHIR strings; JSONB rejects them too)."""
    pending_high = -1  # offset of a high surrogate escape awaiting its low half
    pending_end = -1
    for match in _UNICODE_ESCAPE.finditer(text):
        hex_digits = match.group(1)
        if hex_digits is None:
            continue
        code = int(hex_digits, 16)
        start = match.start()
        if pending_high >= 0:
            if 0xDC00 <= code <= 0xDFFF and start == pending_end:
                pending_high = -1
                continue
            _lone_surrogate(text, pending_high)
        if code == 0:
            raise BadRequest(
                f"Invalid JSON at {_position(text, start)}: the NUL character \\u0000 is "
                "not allowed in FHIR strings"
            )
        if 0xD800 <= code <= 0xDBFF:
            pending_high, pending_end = start, match.end()
        elif 0xDC00 <= code <= 0xDFFF:
            _lone_surrogate(text, start)
    if pending_high >= 0:
        _lone_surrogate(text, pending_high)


def _lone_surrogate(text: str, offset: int) -> NoReturn:
    raise BadRequest(
        f"Invalid JSON at {_position(text, offset)}: unpaired UTF-16 surrogate escape "
        f"{text[offset : offset + 6]}"
    )


def _blank_strings(text: str) -> str:
    """The text with string contents blanked, offsets unchanged (to locate a token)."""
    return _STRING.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', text)


def _duplicate_key_path(text: str) -> str:
    """Where the first duplicate key is, as a FHIRPath-like path (only on the error path)."""

    class Pairs(list[tuple[str, Any]]):
        pass

    tree = json.loads(text, object_pairs_hook=Pairs, parse_float=Decimal)
    stack: list[tuple[Any, str]] = [(tree, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, Pairs):
            keys = [key for key, _ in node]
            if len(set(keys)) != len(keys):
                return path or "the top-level object"
            if not path:
                types = [v for k, v in node if k == "resourceType" and isinstance(v, str)]
                path = types[0] if types else "$"
            stack.extend((value, f"{path}.{key}") for key, value in reversed(node))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(node))))
    return "an object"  # pragma: no cover - the first pass found one


def parse_json(body: bytes | str, *, max_depth: int = 100, max_entries: int | None = None) -> Any:
    """Parse a FHIR JSON body. Numbers with a fraction or exponent become `Decimal` (so
    `1.50` keeps its precision); integers stay `int`. Raises `BadRequest` saying what is
    wrong and where, and `PayloadTooLarge` past `MAX_CONTAINERS` objects and arrays or, if
    given, `max_entries` Bundle entries."""
    if isinstance(body, str):
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(
                f"Invalid JSON at {_position(body, exc.start)}: unpaired UTF-16 surrogate"
            ) from None
        text = body
    else:
        raw = bytes(body)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise BadRequest(
                f"Invalid JSON: the body is not valid UTF-8 (byte {exc.start}, line {line})"
            ) from None
    if text.startswith("\ufeff"):
        text = text[1:]

    if len(raw) > MAX_CONTAINERS and _containers(raw) > MAX_CONTAINERS:
        raise PayloadTooLarge(
            f"The JSON holds more than {MAX_CONTAINERS} objects and arrays; send less at once"
        )
    # Nesting can be no deeper than the number of opening brackets: usually nothing to scan.
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth(raw) > max_depth:
        raise BadRequest(f"Invalid JSON: nested deeper than {max_depth} levels")
    if "\\u" in text:
        _check_escapes(text)

    try:
        return json.loads(
            text,
            object_pairs_hook=_object if max_entries is None else _counting_entries(max_entries),
            parse_float=_decimal,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateKey as exc:
        raise BadRequest(
            f"Invalid JSON: duplicate key {exc.key!r} in {_duplicate_key_path(text)}"
        ) from None
    except _TooManyEntries:
        raise PayloadTooLarge(
            f"The Bundle has more than {max_entries} entries; the limit is {max_entries}"
        ) from None
    except _NumberOutOfRange as exc:
        shown = exc.text if len(exc.text) <= 20 else exc.text[:20] + "..."
        if exc.exponent:
            raise BadRequest(
                f"Invalid JSON: the number {shown} is stored in fixed-point form, where its "
                f"exponent would take more than {MAX_EXPONENT_ZEROS} zeros; write it "
                "without an exponent if that many digits are meant"
            ) from None
        raise BadRequest(
            f"Invalid JSON: the number {shown} is out of range (at most "
            f"{MAX_NUMBER_DIGITS} digits before and after the decimal point)"
        ) from None
    except RecursionError:
        raise BadRequest("Invalid JSON: nested too deeply") from None
    except ValueError:
        found = _NON_FINITE.search(_blank_strings(text))
        if found is not None:
            raise BadRequest(
                f"Invalid JSON at {_position(text, found.start())}: {found.group()} is not "
                "a JSON number"
            ) from None
        # What remains: int() refuses more than sys.get_int_max_str_digits() digits.
        raise BadRequest(
            f"Invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None


# --- serialization -------------------------------------------------------------------------

# Fixed-point notation is used for negative exponents down to this many leading zeros; below,
# an exponent keeps `1e-400` from growing to 400 characters.
_MAX_FIXED_ZEROS = 64
_INT64 = range(-(2**63), 2**63)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a JSON number")
    text = str(value)
    # str() switches to an exponent below 1e-6 (0.0000001 -> 1E-7); JSON from a client wrote
    # the fixed form, so restore it. Positive exponents only come from exponent input.
    exponent = value.as_tuple().exponent
    if (
        "E" in text
        and isinstance(exponent, int)
        and exponent < 0
        and value.adjusted() >= -_MAX_FIXED_ZEROS
    ):
        text = format(value, "f")
    return text


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(_decimal_text(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _big_ints_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _big_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_big_ints_as_text(item) for item in value]
    if type(value) is int and value not in _INT64:
        return orjson.Fragment(str(value))
    return value


def dump_json(value: Any, *, pretty: bool = False) -> bytes:
    """Compact JSON bytes (indented with `pretty`); a `Decimal` is written with its exact
    digits (`1.50` stays `1.50`), so `dump_json(parse_json(body))` keeps every number's
    value and precision."""
    if pretty:
        return orjson.dumps(_big_ints_as_text(value), default=_default, option=orjson.OPT_INDENT_2)
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError as exc:
        # orjson stops at 64-bit integers; JSON (and PostgreSQL numeric) has no such limit.
        if "64-bit" not in str(exc):
            raise
        return orjson.dumps(_big_ints_as_text(value), default=_default)
