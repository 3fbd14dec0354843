"""`_include`, `_revinclude` and `:iterate` (https://hl7.org/fhir/R4B/search.html#include)
over a small care graph: Observation → Encounter → Patient → Organization, Encounter →
Practitioner, and what is not followed (absolute, contained and deleted targets)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.search.model import Include
from cmfhir.store import Store, open_database

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:8]


def rid(key: str) -> str:
    """The id a readable corpus key has in this run."""
    return f"{key}-{RUN}"


def ref(resource_type: str, key: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{rid(key)}"}


def _org(key: str, part_of: str | None = None) -> dict[str, Any]:
    org: dict[str, Any] = {"resourceType": "Organization", "name": key}
    if part_of is not None:
        org["partOf"] = ref("Organization", part_of)
    return org


def _encounter(subject: str, *practitioners: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": ref("Patient", subject),
        "participant": [{"individual": ref("Practitioner", p)} for p in practitioners],
    }


def _observation(subject: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": ref("Patient", subject),
        **more,
    }


# Created in this order, so a search's default order (creation) is this order too.
CORPUS: dict[str, dict[str, Any]] = {
    "org": _org("org"),
    "pr1": {"resourceType": "Practitioner", "name": [{"family": "One"}]},
    "pr2": {"resourceType": "Practitioner", "name": [{"family": "Two"}]},
    "pr3": {"resourceType": "Practitioner", "name": [{"family": "Gone"}]},
    "ada": {
        "resourceType": "Patient",
        "managingOrganization": ref("Organization", "org"),
        "generalPractitioner": [ref("Practitioner", "pr1")],
    },
    "bob": {"resourceType": "Patient"},
    "e1": {**_encounter("ada", "pr1"), "serviceProvider": ref("Organization", "org")},
    "e2": _encounter("bob", "pr2"),
    "e3": _encounter("ada", "pr3"),
    "o1": _observation(
        "ada", encounter=ref("Encounter", "e1"), performer=[ref("Practitioner", "pr1")]
    ),
    "o2": _observation("bob", encounter=ref("Encounter", "e2")),
    # An absolute reference names another server's resource, even when the tail matches.
    "o3": _observation(
        "ada",
        performer=[{"reference": f"http://elsewhere.example/fhir/Practitioner/{rid('pr2')}"}],
    ),
    "o4": _observation("bob", hasMember=[ref("Observation", "o1")]),
    "o5": _observation(
        "bob",
        contained=[{"resourceType": "Practitioner", "id": "c1", "name": [{"family": "Inner"}]}],
        performer=[{"reference": "#c1"}],
    ),
    # A chain of six organizations (deeper than the iterate limit) and a cycle of two.
    **{f"a{i}": _org(f"a{i}", f"a{i + 1}" if i < 5 else None) for i in range(6)},
    "b0": _org("b0", "b1"),
    "b1": _org("b1", "b0"),
}


@pytest.fixture(scope="module")
def corpus(client: httpx.Client, settings: Settings, start_server: type) -> None:
    # One transaction: the chain and the cycle of organizations point at each other, and
    # references may only name resources that exist (or are created alongside).
    entries = [
        {
            "resource": {**body, "id": rid(key)},
            "request": {"method": "PUT", "url": f"{body['resourceType']}/{rid(key)}"},
        }
        for key, body in CORPUS.items()
    ]
    response = client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=FHIR
    )
    assert response.status_code == 200, response.text
    # e3 still points at pr3: only a server that does not guard deletes lets it go, which
    # is how a reference to a deleted resource comes about.
    unguarded = settings.model_copy(update={"enforce_referential_integrity_on_delete": False})
    with start_server(unguarded) as server:
        deleted = httpx.delete(f"{server.base}/Practitioner/{rid('pr3')}")
    assert deleted.status_code in (200, 204), deleted.text


def _entries(bundle: dict[str, Any], mode: str) -> list[str]:
    keys = {rid(k): k for k in CORPUS}
    return [
        keys.get(e["resource"]["id"], e["resource"]["id"])
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def _get(client: httpx.Client, url: str) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    return bundle


def _ids(*keys: str) -> str:
    return ",".join(rid(k) for k in keys)


class _Ids(dict[str, str]):
    """`{o1,o2}` in a query template becomes this run's ids."""

    def __missing__(self, key: str) -> str:
        return _ids(*key.split(","))


@pytest.mark.parametrize(
    ("query", "matches", "included"),
    [
        pytest.param(
            "Observation?_id={o1,o2}&_include=Observation:encounter",
            {"o1", "o2"},
            {"e1", "e2"},
            id="include",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:performer:Practitioner",
            {"o1"},
            {"pr1"},
            id="include-target-type",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:subject:Group",
            {"o1"},
            set(),
            id="include-other-target-type",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:encounter&_include=Observation:subject",
            {"o1"},
            {"e1", "ada"},
            id="two-includes",
        ),
        pytest.param("Encounter?_id={e1}&_include=*", {"e1"}, {"ada", "pr1", "org"}, id="star"),
        pytest.param(
            "Encounter?_id={e1}&_include=Encounter:*",
            {"e1"},
            {"ada", "pr1", "org"},
            id="every-param-of-type",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Encounter:subject",
            {"o1"},
            set(),
            id="source-type-not-matched",
        ),
        pytest.param(
            "Patient?_id={ada}&_revinclude=Encounter:subject",
            {"ada"},
            {"e1", "e3"},
            id="revinclude",
        ),
        pytest.param(
            "Patient?_id={ada}&_revinclude=Observation:subject:Patient",
            {"ada"},
            {"o1", "o3"},
            id="revinclude-target-type",
        ),
        pytest.param(
            "Patient?_id={ada}&_revinclude=Observation:subject:Group",
            {"ada"},
            set(),
            id="revinclude-other-target-type",
        ),
        pytest.param(
            "Practitioner?_id={pr1}&_revinclude=*",
            {"pr1"},
            {"ada", "e1", "o1"},
            id="revinclude-star",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:encounter"
            "&_include:iterate=Encounter:subject",
            {"o1"},
            {"e1", "ada"},
            id="iterate",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:encounter"
            "&_include:iterate=Encounter:subject&_include:iterate=Patient:organization",
            {"o1"},
            {"e1", "ada", "org"},
            id="iterate-two-levels",
        ),
        pytest.param(
            "Observation?_id={o1}&_include=Observation:encounter&_include=Encounter:subject",
            {"o1"},
            {"e1"},
            id="no-iterate-one-level",
        ),
        pytest.param(
            "Patient?_id={ada}&_revinclude=Encounter:subject"
            "&_revinclude:iterate=Observation:encounter",
            {"ada"},
            {"e1", "e3", "o1"},
            id="revinclude-iterate",
        ),
        pytest.param(
            "Observation?_id={o1}&_revinclude:iterate=Observation:has-member",
            {"o1"},
            {"o4"},
            id="revinclude-same-type",
        ),
        pytest.param(
            "Encounter?_id={e1}&_include=Encounter:subject&_revinclude:iterate=Observation:patient",
            {"e1"},
            {"ada", "o1", "o3"},
            id="include-then-revinclude-iterate",
        ),
        pytest.param(
            "Observation?_id={o1,o4}&_include=Observation:has-member",
            {"o1", "o4"},
            set(),
            id="match-not-repeated-as-include",
        ),
        pytest.param(
            "Observation?_id={o3}&_include=Observation:performer",
            {"o3"},
            set(),
            id="absolute-not-followed",
        ),
        pytest.param(
            "Observation?_id={o5}&_include=Observation:performer",
            {"o5"},
            set(),
            id="contained-not-followed",
        ),
        pytest.param(
            "Encounter?_id={e3}&_include=Encounter:participant",
            {"e3"},
            set(),
            id="deleted-not-included",
        ),
        pytest.param(
            "Organization?_id={b0}&_include:iterate=Organization:partof",
            {"b0"},
            {"b1"},
            id="iterate-cycle-ends",
        ),
        pytest.param(
            "Organization?_id={a0}&_include=Organization:partof",
            {"a0"},
            {"a1"},
            id="chain-one-level",
        ),
    ],
)
def test_include(
    client: httpx.Client, corpus: None, query: str, matches: set[str], included: set[str]
) -> None:
    url = query.format_map(_Ids())
    bundle = _get(client, url)
    assert set(_entries(bundle, "match")) == matches
    found = _entries(bundle, "include")
    assert set(found) == included
    assert len(found) == len(set(found)), "an included resource is repeated"
    # Includes come after the matches and never change the total.
    modes = [
        e["search"]["mode"] for e in bundle.get("entry", []) if e["search"]["mode"] != "outcome"
    ]
    assert modes == sorted(modes, key=["match", "include"].index)
    assert bundle["total"] == len(matches)


@pytest.mark.parametrize("extra", ["_count=0", "_summary=count"])
def test_no_page_no_includes(client: httpx.Client, corpus: None, extra: str) -> None:
    bundle = _get(client, f"Observation?_id={rid('o1')}&_include=Observation:encounter&{extra}")
    assert bundle["total"] == 1
    assert "entry" not in bundle


def test_included_entries_are_full_resources_with_full_urls(
    client: httpx.Client, corpus: None, base: str
) -> None:
    bundle = _get(client, f"Observation?_id={rid('o1')}&_include=Observation:encounter")
    entry = next(e for e in bundle["entry"] if e["search"]["mode"] == "include")
    assert entry["fullUrl"] == f"{base}/Encounter/{rid('e1')}"
    assert entry["resource"]["subject"] == ref("Patient", "ada")
    assert entry["resource"]["meta"]["versionId"] == "1"


def test_shared_target_is_included_once(client: httpx.Client, corpus: None) -> None:
    bundle = _get(client, f"Observation?_id={_ids('o1', 'o3')}&_include=Observation:subject")
    assert Counter(_entries(bundle, "include")) == Counter({"ada": 1})


def test_iterate_depth_is_bounded_and_says_so(client: httpx.Client, corpus: None) -> None:
    bundle = _get(client, f"Organization?_id={rid('a0')}&_include:iterate=Organization:partof")
    # The first level and three more: a5 is past the limit of four levels.
    assert _entries(bundle, "include") == ["a1", "a2", "a3", "a4"]
    outcome = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    assert outcome["issue"][0]["severity"] == "warning"
    assert "4 levels" in outcome["issue"][0]["diagnostics"]


def test_iterate_star_over_the_graph_terminates(client: httpx.Client, corpus: None) -> None:
    url = f"Patient?_id={_ids('ada', 'bob')}&_include:iterate=*&_revinclude:iterate=*"
    bundle = _get(client, url)
    found = _entries(bundle, "include")
    assert len(found) == len(set(found))
    # Everything linked to ada or bob within four levels, nothing that is not linked.
    assert {"org", "pr1", "e1", "e2", "e3", "o1", "o2", "o3", "o4", "o5"} <= set(found)
    assert not {"a0", "b0", "pr3"} & set(found)


def test_includes_follow_each_page(client: httpx.Client, corpus: None, base: str) -> None:
    url: str | None = (
        f"{base}/Observation?_id={_ids('o1', 'o2', 'o3')}&_include=Observation:encounter&_count=1"
        "&_total=accurate"
    )
    pages: list[tuple[list[str], list[str]]] = []
    totals: list[int] = []
    while url:
        bundle = _get(client, url)
        pages.append((_entries(bundle, "match"), _entries(bundle, "include")))
        if "total" in bundle:
            totals.append(bundle["total"])
        url = next((lk["url"] for lk in bundle["link"] if lk["relation"] == "next"), None)
    assert pages == [(["o1"], ["e1"]), (["o2"], ["e2"]), (["o3"], [])]
    assert totals[0] == 3


def test_system_search_includes(client: httpx.Client, corpus: None) -> None:
    bundle = _get(client, f"?_id={rid('o2')}&_include=Observation:encounter")
    assert _entries(bundle, "match") == ["o2"]
    assert _entries(bundle, "include") == ["e2"]


def test_compartment_search_includes(client: httpx.Client, corpus: None) -> None:
    bundle = _get(client, f"Patient/{rid('bob')}/Encounter?_include=Encounter:participant")
    assert _entries(bundle, "match") == ["e2"]
    assert _entries(bundle, "include") == ["pr2"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        pytest.param("Observation?_include=Foo:bar", "_include", id="unknown-type"),
        pytest.param("Observation?_include=Observation:bar", "_include", id="unknown-param"),
        pytest.param("Observation?_include=Observation:status", "_include", id="not-a-reference"),
        pytest.param("Observation?_include=Observation", "_include", id="no-param"),
        pytest.param("Patient?_revinclude=Observation:subject:Foo", "_revinclude", id="bad-target"),
        pytest.param("Patient?_include:deep=Patient:organization", "_include:deep", id="modifier"),
        pytest.param(
            "Patient?_summary=text&_revinclude=Observation:subject", "_summary", id="with-text"
        ),
    ],
)
def test_include_errors(client: httpx.Client, query: str, named: str) -> None:
    response = client.get(query)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [named]
    assert named.split(":")[0] in issue["diagnostics"]


async def test_included_resources_are_capped(corpus: None, settings: Settings) -> None:
    database = await open_database(
        settings.database_url, settings.data_dir, pool_size=1, migrate=False
    )
    try:
        async with Store(database.engine).transaction(principal=TRUSTED, read_only=True) as repo:
            everything = Include("*", "*", None, iterate=True, reverse=False)
            a0 = await repo.conn.scalar(
                text("SELECT rid FROM resource WHERE resource_type = 'Organization' AND id = :id"),
                {"id": rid("a0")},
            )
            org = [(a0, "Organization", rid("a0"))]
            found = await repo.included(org, [everything], [], max_depth=10, max_total=2)
            assert [r[1] for r in found.resources] == [rid("a1"), rid("a2")]
            assert found.capped
            whole = await repo.included(org, [everything], [], max_depth=10, max_total=100)
            assert [r[1] for r in whole.resources] == [rid(f"a{i}") for i in range(1, 6)]
            assert not whole.capped
            assert not whole.deep
    finally:
        await database.dispose()
