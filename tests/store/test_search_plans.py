"""Every search shape can use indexes: EXPLAIN of the SQL the store builds, on a loaded
corpus, shows no sequential scan of the resource table or of an index table. And a page of
a population-wide search reads no more resource rows than it returns (plus the one that
tells whether there is a next page): it is picked from the index rows first.

On a corpus this small the planner rightly prefers sequential scans, so the plans are taken
with `enable_seqscan = off`: a sequential scan that remains means no index serves that
shape, which is what these tests guard against."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from cmfhir.auth.principal import OPEN
from cmfhir.config import Settings
from cmfhir.resources.search_parameters import load_registry
from cmfhir.search.model import Include
from cmfhir.search.parse import parse_search
from cmfhir.store.includes import _level_sql
from cmfhir.store.search_sql import (
    Statement,
    count_statement,
    counts_from_index,
    page_statement,
)

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:8]
MEMBERS = 400


def _member_bundle(start: int) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for n in range(start, start + 50):
        pid = f"plan-{RUN}-{n}"
        entries.append(
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": pid,
                    "identifier": [{"system": "urn:test:plan", "value": f"{RUN}-{n}"}],
                    "name": [{"family": f"Family{n % 97}", "given": [f"Given{n}"]}],
                    "gender": ["female", "male", "other"][n % 3],
                    "birthDate": f"{1940 + n % 60}-0{1 + n % 9}-1{n % 10}",
                    "generalPractitioner": [{"reference": f"Practitioner/plan-{RUN}-gp{n % 5}"}],
                },
                "request": {"method": "PUT", "url": f"Patient/{pid}"},
            }
        )
        for k in range(4):
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {
                            "coding": [{"system": "http://loinc.org", "code": f"{k}-{n % 7}"}]
                        },
                        "subject": {"reference": f"Patient/{pid}"},
                        "effectiveDateTime": f"202{k}-0{1 + n % 9}-1{n % 10}T10:00:00Z",
                        "valueQuantity": {"value": n + k, "unit": "kg"},
                        "component": [
                            {
                                "code": {"coding": [{"system": "http://loinc.org", "code": c}]},
                                "valueQuantity": {"value": n % 150 + j, "unit": "mm[Hg]"},
                            }
                            for j, c in enumerate(("8480-6", "8462-4"))
                        ],
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
    for g in range(5):
        entries.append(
            {
                "resource": {
                    "resourceType": "Practitioner",
                    "id": f"plan-{RUN}-gp{g}",
                    "name": [{"family": f"Doctor{g}"}],
                },
                "request": {"method": "PUT", "url": f"Practitioner/plan-{RUN}-gp{g}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


@pytest.fixture(scope="module")
def loaded(client: httpx.Client) -> None:
    for start in range(0, MEMBERS, 50):
        response = client.post(
            "", json=_member_bundle(start), headers={**FHIR, "Prefer": "return=minimal"}
        )
        assert response.status_code == 200, response.text[:300]


SHAPES = [
    pytest.param("Patient", [("identifier", f"urn:test:plan|{RUN}-7")], id="token"),
    pytest.param("Patient", [("gender", "female")], id="token-unselective"),
    pytest.param("Patient", [("name", "family1")], id="string-prefix"),
    pytest.param("Patient", [("name:exact", "Family12")], id="string-exact"),
    pytest.param("Patient", [("birthdate", "ge1990-01-01")], id="date"),
    pytest.param(
        "Patient", [("general-practitioner", f"Practitioner/plan-{RUN}-gp1")], id="reference"
    ),
    pytest.param("Observation", [("subject", f"Patient/plan-{RUN}-3")], id="reference-subject"),
    pytest.param("Observation", [("value-quantity", "gt300")], id="quantity"),
    pytest.param("Observation", [("code", "http://loinc.org|1-3"), ("date", "ge2021")], id="and"),
    pytest.param("Observation", [("subject:Patient.name", "family5")], id="chain"),
    pytest.param("Patient", [("_has:Observation:subject:code", "2-2")], id="has"),
    pytest.param("Patient", [("_id", f"plan-{RUN}-9")], id="id"),
    pytest.param(
        "Observation",
        [("component-code-value-quantity", "http://loinc.org|8480-6$lt90")],
        id="composite-component",
    ),
    pytest.param(
        "Observation", [("code-value-quantity", "http://loinc.org|1-3$gt300")], id="composite"
    ),
    pytest.param(
        "Patient",
        [("_has:Observation:subject:combo-code-value-quantity", "8462-4$ge140")],
        id="composite-in-has",
    ),
    # Parameters stored as the rows of others (`combo-code`: `code`, `component-code`).
    pytest.param("Observation", [("combo-code", "http://loinc.org|1-3")], id="union"),
    pytest.param("Observation", [("combo-value-quantity", "gt300")], id="union-quantity"),
    pytest.param(
        "Observation",
        [("combo-code-value-quantity", "http://loinc.org|8480-6$lt90")],
        id="composite-union",
    ),
    pytest.param("Patient", [("phonetic", "family1")], id="union-string"),
    pytest.param(
        "Patient", [("_lastUpdated", "gt2020-01-01"), ("gender", "male")], id="last-updated"
    ),
    pytest.param("Patient", [("gender", "other"), ("_sort", "-birthdate")], id="sort-by-param"),
]


def _scans(plan: Any) -> Iterator[tuple[str, str]]:
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            yield plan["Node Type"], plan["Relation Name"]
        for value in plan.values():
            yield from _scans(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _scans(value)


async def _explain(url: str, statements: list[Statement], *, analyze: bool = False) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
        await conn.execute("SET enable_seqscan = off")
        options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
        plans = []
        for statement in statements:
            raw = await conn.fetchval(f"EXPLAIN ({options}) {statement.sql}", *statement.args)
            plans.append(json.loads(raw) if isinstance(raw, str) else raw)
        return plans
    finally:
        await conn.close()


@pytest.mark.parametrize(("resource_type", "params"), SHAPES)
def test_search_uses_indexes(
    loaded: None, settings: Settings, resource_type: str, params: list[tuple[str, str]]
) -> None:
    registry = load_registry(settings.profiles_dir)
    request = parse_search(registry, resource_type, params, strict=True)
    page, _ = page_statement(request, 20, OPEN)
    count = count_statement(request, None, OPEN)
    plans = asyncio.run(_explain(settings.database_url or "", [page, count]))
    for plan in plans:
        seq = [rel for node, rel in _scans(plan) if node == "Seq Scan"]
        assert seq == [], json.dumps(plan)[:3000]


def _resource_rows(plan: Any) -> int:
    """Rows the plan's scans of the resource table produced (all loops)."""
    if isinstance(plan, list):
        return sum(_resource_rows(p) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = 0
    if plan.get("Relation Name") == "resource":
        own = plan["Actual Rows"] * plan["Actual Loops"]
    return own + sum(_resource_rows(v) for v in plan.values() if isinstance(v, dict | list))


# Searches whose matches run through the population (hundreds here, thousands in a caseload).
POPULATION_WIDE = [
    pytest.param("Patient", [("gender", "female")], 133, id="token-any-system"),
    pytest.param(
        "Patient", [("gender", "http://hl7.org/fhir/administrative-gender|male")], 133, id="token"
    ),
    pytest.param("Observation", [("code", "http://loinc.org|1-3")], 57, id="code"),
    pytest.param(
        "Observation", [("code", "http://loinc.org|2-3"), ("date", "ge2021")], 57, id="code-date"
    ),
    pytest.param(
        "Patient", [("general-practitioner", f"Practitioner/plan-{RUN}-gp1")], 80, id="reference"
    ),
    # Stored as the rows of `code` and `component-code`: every Observation has a component
    # 8480-6, none a code 8480-6 or a component 1-3.
    pytest.param("Observation", [("combo-code", "http://loinc.org|1-3")], 57, id="union"),
    pytest.param(
        "Observation", [("combo-code", "http://loinc.org|8480-6")], 1600, id="union-components"
    ),
]


@pytest.mark.parametrize(("resource_type", "params", "matches"), POPULATION_WIDE)
@pytest.mark.parametrize("count", [5, 20])
def test_population_wide_page_reads_only_its_rows(
    loaded: None,
    settings: Settings,
    resource_type: str,
    params: list[tuple[str, str]],
    matches: int,
    count: int,
) -> None:
    registry = load_registry(settings.profiles_dir)
    request = parse_search(registry, resource_type, [*params, ("_count", str(count))], strict=True)
    page, _ = page_statement(request, request.count, OPEN)
    (plan,) = asyncio.run(_explain(settings.database_url or "", [page], analyze=True))
    returned = plan[0]["Plan"]["Actual Rows"]
    assert returned == count + 1, f"the corpus has {matches} matches; the page is full"
    assert _resource_rows(plan) <= count + 1, json.dumps(plan)[:3000]


def test_has_reads_no_row_of_its_sources(loaded: None, settings: Settings) -> None:
    """`_has` with a criterion on the sources' index rows: index rows exist for live
    resources only, so the sources' own rows are not read, only the matched resources'."""
    registry = load_registry(settings.profiles_dir)
    request = parse_search(
        registry, "Patient", [("_has:Observation:subject:code", "2-2"), ("_count", "1000")]
    )
    page, _ = page_statement(request, request.count, OPEN)
    (plan,) = asyncio.run(_explain(settings.database_url or "", [page], analyze=True))
    returned = plan[0]["Plan"]["Actual Rows"]
    assert returned >= MEMBERS // 7
    assert _resource_rows(plan) <= returned, json.dumps(plan)[:3000]


# The ones whose first page counts its matches in its own statement, from the index alone.
# (more matches than the bound of 1000 the test counts up to: not counted along)
COUNTED_ALONG = [p for p in POPULATION_WIDE if p.id not in ("code-date", "union-components")]


@pytest.mark.parametrize(("resource_type", "params", "matches"), COUNTED_ALONG)
def test_population_wide_page_with_its_count_reads_only_its_rows(
    loaded: None,
    settings: Settings,
    resource_type: str,
    params: list[tuple[str, str]],
    matches: int,
) -> None:
    """A first page and its bounded total in one statement: the count reads index rows
    only, so the page still reads no more resource rows than it returns, and the count
    is every match (within the bound) or the bound plus one (past it)."""
    registry = load_registry(settings.profiles_dir)
    request = parse_search(registry, resource_type, [*params, ("_count", "20")], strict=True)
    assert counts_from_index(request, OPEN)
    statements = [
        page_statement(request, request.count, OPEN, count_up_to=bound)[0]
        for bound in (1000, matches - 5)
    ]
    plans = asyncio.run(_explain(settings.database_url or "", statements, analyze=True))
    for plan in plans:
        assert [rel for node, rel in _scans(plan) if node == "Seq Scan"] == []
        assert plan[0]["Plan"]["Actual Rows"] == 21
        assert _resource_rows(plan) <= 21, json.dumps(plan)[:3000]

    async def counted() -> list[int]:
        conn = await asyncpg.connect(settings.database_url or "")
        try:
            return [(await conn.fetch(s.sql, *s.args))[0][4] for s in statements]
        finally:
            await conn.close()

    found = asyncio.run(counted())
    if params[0][1].startswith(f"Practitioner/plan-{RUN}"):  # no other test makes these
        assert found == [matches, matches - 4]
    else:
        assert found[0] >= matches and found[1] == matches - 4


def test_a_count_along_the_page_is_refused_where_the_index_alone_cannot_count(
    settings: Settings,
) -> None:
    registry = load_registry(settings.profiles_dir)
    for params in (
        [("code", "http://loinc.org|1-3"), ("date", "ge2021")],
        [("code", "http://loinc.org|1-3"), ("_sort", "date")],
        [("date", "ge2021")],
    ):
        request = parse_search(registry, "Observation", params, strict=True)
        assert not counts_from_index(request, OPEN)
        with pytest.raises(ValueError, match="counted"):
            page_statement(request, 20, OPEN, count_up_to=1000)


INCLUDES = [
    pytest.param(
        Include("Patient", "general-practitioner", None, iterate=False, reverse=False),
        id="include",
    ),
    pytest.param(Include("Observation", "subject", None, iterate=False, reverse=True), id="rev"),
]


@pytest.mark.parametrize("include", INCLUDES)
def test_include_level_reads_only_what_it_brings(
    loaded: None, settings: Settings, include: Include
) -> None:
    """One statement per level and page: from the page's rids, through the index rows, to
    the resources brought; no sequential scan, and no resource row read but each brought
    resource (twice for `_include`: found by type and id, then read)."""
    url = settings.database_url or ""

    async def page() -> tuple[list[int], list[str]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT rid, id FROM resource WHERE resource_type = 'Patient' AND id LIKE $1 "
                "ORDER BY rid LIMIT 20",
                f"plan-{RUN}-%",
            )
            return [row[0] for row in rows], [row[1] for row in rows]
        finally:
            await conn.close()

    rids, ids = asyncio.run(page())
    forward = () if include.reverse else (include,)
    reverse = (include,) if include.reverse else ()
    text, access = _level_sql(forward, reverse, OPEN)
    assert access == []
    joined = ",".join(map(str, rids))  # lists are bound as comma-separated text
    args: tuple[Any, ...] = (joined, joined, 1001)
    if include.reverse:
        args += (",".join(["Patient"] * len(ids)), ",".join(ids))
    (plan,) = asyncio.run(_explain(url, [Statement(text, args)], analyze=True))
    assert [rel for node, rel in _scans(plan) if node == "Seq Scan"] == []
    brought = plan[0]["Plan"]["Actual Rows"]
    assert brought == (80 if include.reverse else 5)
    references = 20 if not include.reverse else 0  # one general practitioner each
    assert _resource_rows(plan) <= brought + references
