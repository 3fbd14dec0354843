"""The tuples the store COPYs into the index tables (`index_records`) name every column of
their table and hold the values of `index_rows`, composite groups and cut values included."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from cmfhir.resources.index_values import extract_index
from cmfhir.resources.search_parameters import load_registry
from cmfhir.store.indexing import MAX_INDEXED_BYTES, RECORD_COLUMNS, index_records, index_rows
from cmfhir.store.schema import INDEX_TABLES

REGISTRY = load_registry(Path(__file__).parents[2] / "profiles")


def test_record_columns_are_the_tables_columns() -> None:
    assert RECORD_COLUMNS.keys() == INDEX_TABLES.keys()
    for kind, columns in RECORD_COLUMNS.items():
        assert sorted(columns) == sorted(c.name for c in INDEX_TABLES[kind].c)


def test_records_hold_the_rows() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [
            {"system": "urn:x", "value": "1", "type": {"coding": [{"code": "MR"}], "text": "T"}}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/1", "identifier": {"system": "urn:p", "value": "9"}},
        "effectiveDateTime": "2024-01-02",
        "valueString": "é" * MAX_INDEXED_BYTES,
        "component": [
            {"code": {"text": "systolic"}, "valueQuantity": {"value": Decimal("120")}},
            {"code": {"text": "diastolic"}, "valueQuantity": {"value": Decimal("80")}},
        ],
    }
    index = extract_index(observation, REGISTRY)
    records = index_records(7, "Observation", index)
    rows = index_rows(7, "Observation", index)
    assert records.keys() == rows.keys()
    for kind, found in records.items():
        assert [dict(zip(RECORD_COLUMNS[kind], r, strict=True)) for r in found] == rows[kind]
    # each component's group apart
    assert len({r["grp"] for r in rows["quantity"] if r["grp"] is not None}) == 2
    # `combo-*` values are the rows of `code`, `component-code`...: none of their own
    assert index.stored_elsewhere >= {"combo-code", "combo-code-value-quantity$1"}
    assert {e.param for e in index.token} >= {"combo-code"}
    stored = {r["param"].split("$")[0] for found in rows.values() for r in found}
    assert {"code", "component-code", "component-code-value-quantity"} <= stored
    assert not any(param.startswith("combo-") for param in stored)
    assert any(r["param"] == "identifier:of-type" for r in rows["token"])
    assert any(r["param"] == "subject:identifier" for r in rows["token"])
    cut = [r for r in rows["string"] if r["param"] == "value-string"]
    assert cut and len(cut[0]["exact"].encode()) <= MAX_INDEXED_BYTES
