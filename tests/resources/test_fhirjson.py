"""parse_json and dump_json: what a client sending a body sees, and what is stored."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from cmfhir.errors import BadRequest, PayloadTooLarge
from cmfhir.resources import RawJson, dump_json, parse_json
from cmfhir.resources.fhirjson import MAX_CONTAINERS

SYNTHEA = sorted((Path(__file__).parents[1] / "data" / "synthea").glob("*.json"))

REJECTED = [
    pytest.param(b'{"resourceType": "Patient", "name": [', "line 1, column 38", id="truncated"),
    pytest.param(b'{"a": 1,}', "line 1, column 9", id="trailing-comma"),
    pytest.param(b"", "line 1, column 1", id="empty-body"),
    pytest.param(b'{\n  "a": tru\n}', "line 2, column 8", id="bad-literal-line-2"),
    pytest.param(b'{"a": "caf\xe9"}', "not valid UTF-8 (byte 10", id="latin-1-byte"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', "not valid UTF-8", id="utf-8-encoded-surrogate"),
    pytest.param(
        b'{"resourceType": "Patient", "name": [{"given": ["A"], "given": ["B"]}]}',
        "duplicate key 'given' in Patient.name[0]",
        id="duplicate-key-nested",
    ),
    pytest.param(
        b'{"id": "1", "id": "2"}', "duplicate key 'id' in the top-level object", id="dup-top"
    ),
    pytest.param(rb'{"a": "\ud800"}', "line 1, column 8: unpaired UTF-16", id="lone-high"),
    pytest.param(rb'{"a": "\udc00x"}', "unpaired UTF-16 surrogate escape \\udc00", id="lone-low"),
    pytest.param(rb'{"a": "\ud800\u0041"}', "escape \\ud800", id="high-then-not-low"),
    pytest.param(rb'{"a": "\ud800", "b": "\udc00"}', "escape \\ud800", id="halves-apart"),
    pytest.param(rb'{"a": "x\u0000"}', "line 1, column 9: the NUL character", id="nul-value"),
    pytest.param(rb'{"\u0000": 1}', "the NUL character", id="nul-key"),
    pytest.param(rb'{"a": "\\\u0000"}', "the NUL character", id="nul-after-escaped-slash"),
    pytest.param(b'{"a": NaN}', "line 1, column 7: NaN is not a JSON number", id="nan"),
    pytest.param(b'{"a": Infinity}', "Infinity is not a JSON number", id="infinity"),
    pytest.param(b'{"a": "NaN", "b": -Infinity}', "column 19: -Infinity", id="neg-infinity"),
    pytest.param(b"[" * 101 + b"]" * 101, "nested deeper than 100 levels", id="depth-101"),
    pytest.param(b"[" * 200_000, "nested deeper than 100 levels", id="depth-200000-unclosed"),
    pytest.param(b'{"a": ' + b"9" * 5000 + b"}", "more than 4300 digits", id="huge-integer"),
]


@pytest.mark.parametrize(("body", "where"), REJECTED)
def test_rejects_with_what_and_where(body: bytes, where: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(body)
    assert caught.value.status == 400
    assert where in caught.value.diagnostics


def test_rejects_lone_surrogate_in_str_input() -> None:
    with pytest.raises(BadRequest, match="line 1, column 8: unpaired UTF-16 surrogate"):
        parse_json('{"a": "\ud800"}')


ACCEPTED = [
    pytest.param(rb'{"a": "\ud83d\ude00"}', {"a": "\U0001f600"}, id="surrogate-pair"),
    pytest.param(rb'{"a": "\\ud800"}', {"a": "\\ud800"}, id="escaped-backslash-not-escape"),
    pytest.param(b'{"a": "[[[[[", "b": "]"}', {"a": "[[[[[", "b": "]"}, id="brackets-in-strings"),
    pytest.param(b'{"a": "x\\"[[["}', {"a": 'x"[[['}, id="escaped-quote-and-brackets"),
    pytest.param(b"[" * 100 + b"]" * 100, None, id="depth-100"),
    pytest.param(b'\xef\xbb\xbf{"a": 1}', {"a": 1}, id="utf-8-bom"),
    pytest.param('{"name": "Zoë"}', {"name": "Zoë"}, id="str-input"),
    pytest.param(b'{"a": "NaN"}', {"a": "NaN"}, id="nan-as-string"),
]


@pytest.mark.parametrize(("body", "expected"), ACCEPTED)
def test_accepts(body: bytes | str, expected: object) -> None:
    parsed = parse_json(body)
    if expected is not None:
        assert parsed == expected


def test_max_depth_is_configurable() -> None:
    assert parse_json(b"[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(BadRequest, match="deeper than 2 levels"):
        parse_json(b"[[[1]]]", max_depth=2)


def test_decimals_are_exact_and_integers_stay_int() -> None:
    parsed = parse_json(b'{"value": 1.50, "small": 0.1, "count": 3, "exp": 1e40}')
    assert isinstance(parsed["value"], Decimal)
    assert str(parsed["value"]) == "1.50"
    assert parsed["small"] == Decimal("0.1")  # not the float 0.1000000000000000055...
    assert type(parsed["count"]) is int
    assert parsed["exp"] == Decimal("1e40")


ROUND_TRIPS = [
    pytest.param('{"value":1.50}', '{"value":1.50}', id="trailing-zero"),
    pytest.param('{"value":0.0000001}', '{"value":0.0000001}', id="tiny-fixed-point"),
    # As PostgreSQL stores and serves them (numeric: fixed point, no negative zero).
    pytest.param('{"value":-0.0}', '{"value":0.0}', id="negative-zero"),
    pytest.param('{"value":100}', '{"value":100}', id="integer"),
    pytest.param('{"value":1E+2}', '{"value":100}', id="exponent-fixed-point"),
    pytest.param('{"value":1.50E+1}', '{"value":15.0}', id="exponent-keeps-fraction-digits"),
    pytest.param('{"value":1.5e-7}', '{"value":0.00000015}', id="negative-exponent"),
    pytest.param('{"value":2.5E3}', '{"value":2500}', id="exponent-written-out"),
    pytest.param('{"value":2.50E2}', '{"value":250}', id="exponent-zero"),
    pytest.param(
        '{"value":123456789012345678901234567890}',
        '{"value":123456789012345678901234567890}',
        id="beyond-64-bit",
    ),
    pytest.param('{"a": [1, {"b": "c"}]}', '{"a":[1,{"b":"c"}]}', id="compact"),
]


@pytest.mark.parametrize(("text", "dumped"), ROUND_TRIPS)
def test_dump_json_round_trips(text: str, dumped: str) -> None:
    assert dump_json(parse_json(text)) == dumped.encode()
    assert parse_json(dump_json(parse_json(text))) == parse_json(text)


@pytest.mark.parametrize("text", ["1e400", "1E+65", "1.5e-500", "-2e-70"])
def test_exponent_that_would_expand_is_refused(text: str) -> None:
    """Stored as numeric, 1e400 would become 401 digits: refused rather than expanded."""
    with pytest.raises(BadRequest, match="fixed-point form"):
        parse_json(f'{{"value":{text}}}')


@pytest.mark.parametrize("path", SYNTHEA, ids=[p.name.split("_")[0] for p in SYNTHEA])
def test_synthea_bundle_round_trips_byte_for_byte(path: Path) -> None:
    raw = path.read_bytes()
    # The same JSON, compact, with every number written exactly as in the file.
    exact = orjson.dumps(json.loads(raw, parse_float=orjson.Fragment))
    assert dump_json(parse_json(raw)) == exact


def test_dump_json_embeds_raw_json() -> None:
    bundle = {"entry": [{"resource": RawJson(b'{"resourceType":"Patient","id":"1"}')}]}
    assert dump_json(bundle) == b'{"entry":[{"resource":{"resourceType":"Patient","id":"1"}}]}'


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_dump_json_refuses_non_finite_decimals(value: Decimal) -> None:
    with pytest.raises(TypeError):
        dump_json({"value": value})


def test_dump_json_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dump_json({"value": {1, 2}})


# --- what a body may cost ------------------------------------------------------------------


def _entries(count: int) -> bytes:
    entry = b'{"request":{"method":"GET","url":"Patient/x"}}'
    head = b'{"resourceType":"Bundle","type":"batch","entry":['
    return head + b",".join([entry] * count) + b"]}"


def test_bundle_entries_are_counted_while_parsing() -> None:
    assert len(parse_json(_entries(10), max_entries=10)["entry"]) == 10
    with pytest.raises(PayloadTooLarge, match="more than 10 entries"):
        parse_json(_entries(11), max_entries=10)


def test_objects_named_request_without_a_method_are_not_entries() -> None:
    """ClaimResponse.request is a Reference, not a Bundle entry's request."""
    claims = b",".join([b'{"resourceType":"ClaimResponse","request":{"reference":"Claim/1"}}'] * 5)
    parsed = parse_json(b'{"contained":[' + claims + b"]}", max_entries=1)
    assert len(parsed["contained"]) == 5


def test_millions_of_containers_are_refused_before_parsing() -> None:
    with pytest.raises(PayloadTooLarge, match="objects and arrays"):
        parse_json(b"[" + b",".join([b"{}"] * (MAX_CONTAINERS + 1)) + b"]")
    # Brackets inside strings are not containers.
    text = "[" * (MAX_CONTAINERS + 1)
    assert parse_json(json.dumps({"a": text}).encode()) == {"a": text}
