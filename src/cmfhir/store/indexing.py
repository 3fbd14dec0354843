"""Index rows of one resource version: the extracted values (resources/index_values.py) as
rows of the index table of their family. Written in the same transaction as the version.

A composite parameter's components are rows like any other, under `code$j`, with `grp` the
number of the repetition they come from (null on every other row): a composite search
joins the rows of its components on (rid, grp).

A parameter whose values are the union of other parameters' (`combo-code` is `code` and
`component-code`; `SearchParameterRegistry.stored_under`) has no rows of its own: its
entries are left out here (`ResourceIndex.stored_elsewhere`) and a search reads the rows of
the others (store/search_sql.py). That is a third of an Observation's rows.

A btree index entry holds at most 2704 bytes, so each text value is cut to its first
`MAX_INDEXED_BYTES` of UTF-8 (two of them share an entry in the token index); a search
compares a longer value by that much of it."""

from __future__ import annotations

from typing import Any

from cmfhir.resources.index_values import ResourceIndex

__all__ = ["MAX_INDEXED_BYTES", "RECORD_COLUMNS", "Record", "index_records", "index_rows"]

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


# The columns of each family's rows, in the order of `index_records`' tuples (the COPY
# names them, so they need not follow the tables' order).
RECORD_COLUMNS: dict[str, tuple[str, ...]] = {
    "token": ("rid", "resource_type", "grp", "param", "system", "code", "text"),
    "string": ("rid", "resource_type", "grp", "param", "value", "exact"),
    "date": ("rid", "resource_type", "grp", "param", "low", "high"),
    "number": ("rid", "resource_type", "grp", "param", "value", "low", "high"),
    "quantity": (
        "rid",
        "resource_type",
        "grp",
        "param",
        "system",
        "code",
        "unit",
        "value",
        "low",
        "high",
    ),
    "reference": ("rid", "resource_type", "grp", "param", "target_type", "target_id", "url"),
    "uri": ("rid", "resource_type", "grp", "param", "uri"),
}

Record = tuple[Any, ...]


def index_rows(
    rid: int, resource_type: str, index: ResourceIndex
) -> dict[str, list[dict[str, Any]]]:
    """Rows per table family (`token`, `string`, ... as in schema.INDEX_TABLES)."""
    return {
        kind: [dict(zip(RECORD_COLUMNS[kind], record, strict=True)) for record in records]
        for kind, records in index_records(rid, resource_type, index).items()
    }


def index_records(rid: int, resource_type: str, index: ResourceIndex) -> dict[str, list[Record]]:
    """`index_rows` as tuples in the order of `RECORD_COLUMNS`: what the store COPYs."""
    elsewhere = index.stored_elsewhere
    records = _records(rid, resource_type, None, _stored_here(index, elsewhere))
    for group in index.composite:
        # A group's entries are all one composite's (`code$j`): stored, or not at all.
        if elsewhere and _first_param(group.values) in elsewhere:
            continue
        more = _records(rid, resource_type, group.group, group.values)
        for kind, found in more.items():
            records[kind].extend(found)
    return records


def _records(rid: int, kind: str, grp: int | None, index: ResourceIndex) -> dict[str, list[Record]]:
    fit = _fit
    token = [(rid, kind, grp, e.param, fit(e.system), fit(e.code), e.text) for e in index.token]
    # `reference:identifier` and `identifier:of-type` are token searches under derived names.
    token.extend(
        (rid, kind, grp, e.param + ":identifier", fit(e.system), fit(e.value), None)
        for e in index.reference_identifiers
    )
    token.extend(
        (
            rid,
            kind,
            grp,
            e.param + ":of-type",
            fit(f"{e.type_system or ''}|{e.type_code}"),
            fit(e.value),
            None,
        )
        for e in index.identifier_types
    )
    return {
        "token": token,
        "string": [(rid, kind, grp, e.param, fit(e.value), fit(e.exact)) for e in index.string],
        "date": [(rid, kind, grp, e.param, e.low, e.high) for e in index.date],
        "number": [(rid, kind, grp, e.param, e.value, e.low, e.high) for e in index.number],
        "quantity": [
            (rid, kind, grp, e.param, fit(e.system), fit(e.code), e.unit, e.value, e.low, e.high)
            for e in index.quantity
        ],
        "reference": [
            (rid, kind, grp, e.param, fit(e.target_type), fit(e.target_id), fit(e.url))
            for e in index.reference
        ],
        "uri": [(rid, kind, grp, e.param, fit(e.uri)) for e in index.uri],
    }


def _first_param(index: ResourceIndex) -> str | None:
    for entries in (index.token, index.quantity, index.string, index.date, index.number):
        if entries:
            return entries[0].param
    for other in (index.uri, index.reference):
        if other:
            return other[0].param
    return None


def _stored_here(index: ResourceIndex, elsewhere: frozenset[str]) -> ResourceIndex:
    """The entries of `index` that get rows of their own (composite groups aside)."""
    if not elsewhere:
        return index
    return ResourceIndex(
        token=[e for e in index.token if e.param not in elsewhere],
        string=[e for e in index.string if e.param not in elsewhere],
        date=[e for e in index.date if e.param not in elsewhere],
        number=[e for e in index.number if e.param not in elsewhere],
        quantity=[e for e in index.quantity if e.param not in elsewhere],
        reference=[e for e in index.reference if e.param not in elsewhere],
        uri=[e for e in index.uri if e.param not in elsewhere],
        reference_identifiers=[e for e in index.reference_identifiers if e.param not in elsewhere],
        identifier_types=[e for e in index.identifier_types if e.param not in elsewhere],
    )
