"""Index rows of one resource version: the extracted values (resources/index_values.py) as
rows of the index table of their family. Written in the same transaction as the version.

A composite parameter's components are rows like any other, under `code$j`, with `grp` the
number of the repetition they come from (null on every other row): a composite search
joins the rows of its components on (rid, grp).

A btree index entry holds at most 2704 bytes, so each text value is cut to its first
`MAX_INDEXED_BYTES` of UTF-8 (two of them share an entry in the token index); a search
compares a longer value by that much of it."""

from __future__ import annotations

from typing import Any

from cmfhir.resources.index_values import ResourceIndex

__all__ = ["MAX_INDEXED_BYTES", "index_rows"]

MAX_INDEXED_BYTES = 1024
# Up to 4 bytes a character: a string this short always fits, without encoding it.
_ALWAYS_FITS = MAX_INDEXED_BYTES // 4


def _fit(text: str | None) -> str | None:
    if text is None or len(text) <= _ALWAYS_FITS:
        return text
    encoded = text.encode()
    if len(encoded) <= MAX_INDEXED_BYTES:
        return text
    return encoded[:MAX_INDEXED_BYTES].decode(errors="ignore")


def index_rows(
    rid: int, resource_type: str, index: ResourceIndex
) -> dict[str, list[dict[str, Any]]]:
    """Rows per table family (`token`, `string`, ... as in schema.INDEX_TABLES)."""
    rows = _rows({"rid": rid, "resource_type": resource_type, "grp": None}, index)
    for group in index.composite:
        more = _rows({"rid": rid, "resource_type": resource_type, "grp": group.group}, group.values)
        for kind, found in more.items():
            rows[kind].extend(found)
    return rows


def _rows(common: dict[str, Any], index: ResourceIndex) -> dict[str, list[dict[str, Any]]]:
    token = [
        {**common, "param": e.param, "system": _fit(e.system), "code": _fit(e.code), "text": e.text}
        for e in index.token
    ]
    # `reference:identifier` and `identifier:of-type` are token searches under derived names.
    token.extend(
        {
            **common,
            "param": e.param + ":identifier",
            "system": _fit(e.system),
            "code": _fit(e.value),
            "text": None,
        }
        for e in index.reference_identifiers
    )
    token.extend(
        {
            **common,
            "param": e.param + ":of-type",
            "system": _fit(f"{e.type_system or ''}|{e.type_code}"),
            "code": _fit(e.value),
            "text": None,
        }
        for e in index.identifier_types
    )
    return {
        "token": token,
        "string": [
            {**common, "param": e.param, "value": _fit(e.value), "exact": _fit(e.exact)}
            for e in index.string
        ],
        "date": [{**common, "param": e.param, "low": e.low, "high": e.high} for e in index.date],
        "number": [
            {**common, "param": e.param, "value": e.value, "low": e.low, "high": e.high}
            for e in index.number
        ],
        "quantity": [
            {
                **common,
                "param": e.param,
                "system": _fit(e.system),
                "code": _fit(e.code),
                "unit": e.unit,
                "value": e.value,
                "low": e.low,
                "high": e.high,
            }
            for e in index.quantity
        ],
        "reference": [
            {
                **common,
                "param": e.param,
                "target_type": _fit(e.target_type),
                "target_id": _fit(e.target_id),
                "url": _fit(e.url),
            }
            for e in index.reference
        ],
        "uri": [{**common, "param": e.param, "uri": _fit(e.uri)} for e in index.uri],
    }
