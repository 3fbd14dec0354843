"""The access predicate as SQL text (store/access_sql.py) chooses the same rows as
`visible` itself (store/access.py), for every kind of principal and both permissions, when
placed after a statement's own parameters on a row of another name; principals of the same
shape share one text, compiled once."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from cmfhir.auth.principal import OPEN, SENSITIVE_SCOPE, TRUSTED, Principal
from cmfhir.config import Settings
from cmfhir.store.access import CARE_TEAM_ROLE, visible
from cmfhir.store.access_sql import compile_count, visible_condition
from cmfhir.store.database import async_url
from cmfhir.store.driver import driver_connection
from cmfhir.store.schema import resource
from cmfhir.store.search_sql import SearchSql

FHIR = {"Content-Type": "application/fhir+json"}
RUN = uuid.uuid4().hex[:8]
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def _id(name: str) -> str:
    return f"acc-{RUN}-{name}"


def _ref(resource_type: str, name: str) -> dict[str, str]:
    return {"reference": f"{resource_type}/{_id(name)}"}


def _observation(name: str, member: str, category: str, label: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": _id(name),
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "urn:test", "code": RUN}]},
        "subject": _ref("Patient", member),
    }
    if label:
        body["meta"] = {"security": [{"system": ACT_CODE, "code": "SUD"}]}
    return body


def _resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": _id("member")},
        {"resourceType": "Patient", "id": _id("other")},
        *({"resourceType": "Practitioner", "id": _id(p)} for p in PRACTITIONERS),
        {"resourceType": "Organization", "id": _id("org"), "name": "Org"},
        {
            "resourceType": "PractitionerRole",
            "id": _id("role"),
            "practitioner": _ref("Practitioner", "supervisor"),
            "organization": _ref("Organization", "org"),
            "code": [{"coding": [{"system": CARE_TEAM_ROLE, "code": "supervisor"}]}],
        },
        {
            "resourceType": "CareTeam",
            "id": _id("team"),
            "status": "active",
            "subject": _ref("Patient", "member"),
            "participant": [{"member": _ref("Practitioner", "nurse")}],
        },
        {
            "resourceType": "EpisodeOfCare",
            "id": _id("episode"),
            "status": "active",
            "patient": _ref("Patient", "other"),
            "managingOrganization": _ref("Organization", "org"),
            "careManager": _ref("Practitioner", "manager"),
        },
        _observation("lab", "member", "laboratory", False),
        _observation("vital", "member", "vital-signs", False),
        _observation("sud", "member", "social-history", True),
        _observation("other-lab", "other", "laboratory", False),
        _observation("other-sud", "other", "social-history", True),
        {
            "resourceType": "Consent",
            "id": _id("consent"),
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": _ref("Patient", "member"),
            "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]},
            "provision": {
                "type": "permit",
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "IRCP",
                                }
                            ]
                        },
                        "reference": _ref("CareTeam", "team"),
                    }
                ],
                "securityLabel": [{"system": ACT_CODE, "code": "SUD"}],
            },
        },
    ]
    return out


PRACTITIONERS = ("nurse", "manager", "supervisor", "stranger")


@pytest.fixture(scope="module")
def world(client: httpx.Client) -> None:
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in _resources()
    ]
    answer = client.post(
        "", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=FHIR
    )
    assert answer.status_code == 200, answer.text


def _practitioner(name: str) -> Principal:
    return Principal("user", "app", fhir_user=f"Practitioner/{_id(name)}", scopes=("user/*.rs",))


PRINCIPALS = [
    pytest.param(None, id="none"),
    pytest.param(TRUSTED, id="trusted"),
    pytest.param(OPEN, id="open"),
    pytest.param(
        Principal("patient", "app", patient=_id("member"), scopes=("patient/*.rs",)),
        id="patient",
    ),
    pytest.param(
        Principal(
            "patient",
            "app",
            patient=_id("member"),
            scopes=(f"patient/Observation.rs?category={CATEGORY}|laboratory",),
        ),
        id="patient-granular",
    ),
    pytest.param(
        Principal("user", "app", fhir_user=f"Patient/{_id('member')}", scopes=("user/*.r",)),
        id="user-member",
    ),
    *(pytest.param(_practitioner(p), id=f"user-{p}") for p in PRACTITIONERS),
    pytest.param(Principal("system", "backend", scopes=("system/*.rs",)), id="system"),
    pytest.param(
        Principal("system", "backend", scopes=("system/Observation.rs", SENSITIVE_SCOPE)),
        id="system-sensitive",
    ),
]


async def _both(url: str, principal: Principal | None, permission: str) -> tuple[set[str], ...]:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                expected = {
                    row[0]
                    for row in await conn.execute(
                        select(resource.c.id).where(
                            resource.c.id.like(f"acc-{RUN}-%"),
                            visible(principal, resource, permission),
                        )
                    )
                }
                sql = SearchSql(principal)
                where = [f"r.id LIKE {sql.bind(f'acc-{RUN}-%')}"]
                if (condition := sql.visible("r", permission)) is not None:
                    where.append(condition)
                driver = await driver_connection(conn)
                rows = await driver.fetch(
                    f"SELECT r.id FROM resource r WHERE {' AND '.join(where)}", *sql.args
                )
                return expected, {row[0] for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.parametrize("permission", ["r", "s"])
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_text_predicate_chooses_the_rows_visible_chooses(
    world: None, settings: Settings, principal: Principal | None, permission: str
) -> None:
    expected, found = asyncio.run(_both(settings.database_url or "", principal, permission))
    assert found == expected


def test_the_rows_differ_by_principal(world: None, settings: Settings) -> None:
    """The comparison above is between sets that mean something."""

    def sees(principal: Principal) -> set[str]:
        return asyncio.run(_both(settings.database_url or "", principal, "s"))[1]

    nurse = sees(_practitioner("nurse"))
    assert {_id("member"), _id("lab"), _id("sud")} <= nurse  # the Consent names the team
    assert _id("other-lab") not in nurse
    manager = sees(_practitioner("manager"))
    assert _id("other-lab") in manager and _id("other-sud") not in manager
    assert sees(_practitioner("stranger")) & {_id("lab"), _id("other-lab")} == set()


def test_unrestricted_principals_add_no_condition() -> None:
    for principal in (TRUSTED, OPEN):
        sql = SearchSql(principal)
        assert sql.visible("r", "s") is None and sql.args == []


def test_same_shape_same_text() -> None:
    """Two practitioners give one text (asyncpg prepares it once); only the values differ."""
    texts, values = [], []
    for name in ("nurse", "manager"):
        sql = SearchSql(_practitioner(name), reserved=2)
        texts.append(sql.visible("t3", "s"))
        values.append(sql.args[2:])
    assert texts[0] is not None and texts[0] == texts[1]
    numbers = [int(n) for n in re.findall(r"\$(\d+)", texts[0])]
    assert min(numbers) == 3 and max(numbers) == 2 + len(values[0])  # after the reserved two
    assert values[0] != values[1]


def test_one_compile_per_shape_of_principal() -> None:
    """Compiling the predicate takes SQLAlchemy a few hundred ms for a practitioner: it is
    done once per shape (kind, scopes, which identities) and permission, not per principal;
    each principal's own ids are its values."""
    scopes = (f"user/Observation.rs?code=urn:test|{RUN}",)  # a shape no other test uses
    before = compile_count()
    conditions = [
        visible_condition(
            Principal("user", f"app-{p}", fhir_user=f"Practitioner/{_id(p)}", scopes=scopes), "s"
        )
        for p in PRACTITIONERS
    ]
    assert compile_count() == before + 1
    assert all(c is not None and c.parts == conditions[0].parts for c in conditions)  # type: ignore[union-attr]
    for name, condition in zip(PRACTITIONERS, conditions, strict=True):
        assert condition is not None and _id(name) in condition.values
    visible_condition(
        Principal("user", "app", fhir_user=f"Practitioner/{_id('nurse')}", scopes=scopes), "r"
    )
    members = [
        visible_condition(Principal("patient", "app", patient=_id(m), scopes=scopes), "s")
        for m in ("member", "other")
    ]
    assert compile_count() == before + 3  # another permission, another kind: two more
    assert members[0] is not None and _id("member") in members[0].values
    assert members[1] is not None and _id("other") in members[1].values
