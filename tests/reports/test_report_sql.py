"""The reports' SQL text: a narrowed run takes the caller's access as a few array
parameters worked out once per run (store/report_access.py), never the access predicate's
text in every subquery (whose planning cost the reports several hundred milliseconds each)."""

from __future__ import annotations

import pytest

from cmfhir.store.reporting import REPORT_SQL, _narrowed

PARTS = [(name, part) for name, parts in REPORT_SQL.items() for part in parts]


@pytest.mark.parametrize(("name", "part"), PARTS, ids=[f"{n}-{p}" for n, p in PARTS])
def test_narrowed_sql_takes_access_as_parameters(name: str, part: str) -> None:
    sql = REPORT_SQL[name][part]
    whole = _narrowed(sql, narrowed=False).text
    narrowed = _narrowed(sql, narrowed=True).text
    for text in (whole, narrowed):
        assert "__visible" not in text
        assert "Consent" not in text and "PractitionerRole" not in text
    assert ":hidden_rids" in narrowed and ":members_now" in narrowed
    assert ":hidden_rids" not in whole and ":members_now" not in whole
    # Every resource row the report reads is checked (one condition per read).
    assert narrowed.count(":hidden_rids") == sql.count("__visible__(")
    assert len(narrowed) < len(whole) + 400 * sql.count("__visible")
