"""Index rows of one resource version: the extracted values (resources/index_values.py) as
rows of the index table of their family. Written in the same transaction as the version."""

from __future__ import annotations

from typing import Any

from cmfhir.resources.index_values import ResourceIndex

__all__ = ["index_rows"]


def index_rows(
    rid: int, resource_type: str, index: ResourceIndex
) -> dict[str, list[dict[str, Any]]]:
    """Rows per table family (`token`, `string`, ... as in schema.INDEX_TABLES)."""
    common = {"rid": rid, "resource_type": resource_type}
    token = [
        {**common, "param": e.param, "system": e.system, "code": e.code, "text": e.text}
        for e in index.token
    ]
    # `reference:identifier` and `identifier:of-type` are token searches under derived names.
    token.extend(
        {
            **common,
            "param": e.param + ":identifier",
            "system": e.system,
            "code": e.value,
            "text": None,
        }
        for e in index.reference_identifiers
    )
    token.extend(
        {
            **common,
            "param": e.param + ":of-type",
            "system": f"{e.type_system or ''}|{e.type_code}",
            "code": e.value,
            "text": None,
        }
        for e in index.identifier_types
    )
    return {
        "token": token,
        "string": [
            {**common, "param": e.param, "value": e.value, "exact": e.exact} for e in index.string
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
                "system": e.system,
                "code": e.code,
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
                "target_type": e.target_type,
                "target_id": e.target_id,
                "url": e.url,
            }
            for e in index.reference
        ],
        "uri": [{**common, "param": e.param, "uri": e.uri} for e in index.uri],
    }
