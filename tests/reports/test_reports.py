"""The care-management reports against a generated caseload whose right answers are worked
out here, in Python, from what the test wrote (not by the reports' SQL): month boundaries in
North Carolina's time zone, tier and care-manager changes mid-month, a transfer between
organizations, contacts that do not qualify, and an empty period."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from cmfhir.app import open_context
from cmfhir.auth.principal import TRUSTED
from cmfhir.config import Settings
from cmfhir.reports.config import load_report_config
from cmfhir.reports.run import REPORTS, Scope, _parameters, parse_period, reads
from cmfhir.store.reporting import explain_report

NC = ZoneInfo("America/New_York")
PROGRAM = "https://cmfhir.org/fhir/CodeSystem/program"
TIER = "https://cmfhir.org/fhir/StructureDefinition/acuity-tier"
MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
REQUIRED = {"high": 3, "moderate": 2, "low": 1}
MONTHS = [(2026, 9), (2026, 10), (2026, 11)]


@dataclass
class Version:
    """One recorded version of an enrollment, and when it was recorded."""

    recorded: datetime
    organization: str
    care_manager: str
    tier: str
    start: date
    end: date | None = None
    status: str = "active"


@dataclass
class Member:
    id: str
    enrollments: list[list[Version]] = field(default_factory=list)
    contacts: list[tuple[datetime, str, str]] = field(default_factory=list)  # sent, medium, status


def _month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=NC)
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=NC)
    return start, following


def _episode(member: str, v: Version) -> dict[str, Any]:
    period: dict[str, str] = {"start": v.start.isoformat()}
    if v.end is not None:
        period["end"] = v.end.isoformat()
    return {
        "resourceType": "EpisodeOfCare",
        "status": v.status,
        "type": [{"coding": [{"system": PROGRAM, "code": "tcm"}]}],
        "patient": {"reference": f"Patient/{member}"},
        "managingOrganization": {"reference": v.organization},
        "careManager": {"reference": v.care_manager},
        "period": period,
        "extension": [{"url": TIER, "valueCode": v.tier}],
    }


def _contact(member: str, sent: datetime, medium: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": status,
        "subject": {"reference": f"Patient/{member}"},
        "sent": sent.isoformat(),
        "medium": [{"coding": [{"system": MODE, "code": medium}]}],
    }


def _version_at(versions: list[Version], month_end: datetime) -> Version:
    before = [v for v in versions if v.recorded < month_end]
    return before[-1] if before else versions[0]


def _enrollment(member: Member, year: int, month: int) -> Version | None:
    """The enrollment a member-month counts under: of those overlapping the month (as
    recorded at its end), the one that started last."""
    start, end = _month_bounds(year, month)
    found = []
    for versions in member.enrollments:
        v = _version_at(versions, end)
        v_start = datetime(v.start.year, v.start.month, v.start.day, tzinfo=NC)
        v_end = None if v.end is None else datetime(v.end.year, v.end.month, v.end.day, tzinfo=NC)
        enrolled = v.status in ("active", "onhold", "finished") and v_start < end
        if enrolled and (v_end is None or v_end >= start):
            found.append(v)
    return max(found, key=lambda v: v.start) if found else None


def _qualifying(member: Member, start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    return sorted(
        (sent, medium)
        for sent, medium, status in member.contacts
        if status == "completed"
        and medium in ("FACE", "PHONE", "VIDEOCONF")
        and start <= sent < end
    )


class Caseload:
    """Two organizations, three care managers, members with known contacts."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.tag = uuid.uuid4().hex[:8]
        self.org_a = self._create({"resourceType": "Organization", "name": f"A {self.tag}"})
        self.org_b = self._create({"resourceType": "Organization", "name": f"B {self.tag}"})
        self.managers = [
            self._create({"resourceType": "Practitioner", "name": [{"family": f"CM{i}"}]})
            for i in range(3)
        ]
        self.members: list[Member] = []

    def _create(self, resource: dict[str, Any]) -> str:
        response = self.client.post(f"/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.text
        return f"{resource['resourceType']}/{response.json()['id']}"

    def add_member(self, versions_per_enrollment: list[list[Version]]) -> Member:
        patient = self._create({"resourceType": "Patient", "name": [{"family": self.tag}]})
        member = Member(patient.split("/")[1], versions_per_enrollment)
        self.members.append(member)
        return member

    def write(self, database_url: str) -> None:
        """Writes every member's enrollments (each version in turn) and contacts, then
        stamps each enrollment version with the time the test says it was recorded."""
        stamps: list[tuple[str, int, datetime]] = []
        for member in self.members:
            for versions in member.enrollments:
                episode = self._create(_episode(member.id, versions[0]))
                stamps.append((episode.split("/")[1], 1, versions[0].recorded))
                for number, version in enumerate(versions[1:], start=2):
                    body = {**_episode(member.id, version), "id": episode.split("/")[1]}
                    response = self.client.put(f"/{episode}", json=body)
                    assert response.status_code == 200, response.text
                    stamps.append((episode.split("/")[1], number, version.recorded))
            entries = [
                {
                    "resource": _contact(member.id, *c),
                    "request": {"method": "POST", "url": "Communication"},
                }
                for c in member.contacts
            ]
            if entries:
                bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
                response = self.client.post("", json=bundle)
                assert response.status_code == 200, response.text
        asyncio.run(_stamp(database_url, stamps))


async def _stamp(database_url: str, stamps: list[tuple[str, int, datetime]]) -> None:
    """The test's clock: when each enrollment version was recorded (the server stamps
    versions with the database's clock, which the test cannot move)."""
    url = make_url(database_url)
    conn = await asyncpg.connect(
        user=url.username,
        password=url.password,
        host=url.query.get("host") or url.host,
        port=url.port,
        database=url.database,
    )
    try:
        for id, version, recorded in stamps:
            await conn.execute(
                "UPDATE resource_history SET last_updated = $3 "
                "WHERE resource_type = 'EpisodeOfCare' AND id = $1 AND version = $2",
                id,
                version,
                recorded,
            )
    finally:
        await conn.close()


def _at(day: str, hour: int = 12, minute: int = 0) -> datetime:
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=NC)


@pytest.fixture(scope="module")
def caseload(client: httpx.Client, database_url: str) -> Caseload:
    load = Caseload(client)
    a, b = load.org_a, load.org_b
    cm0, cm1, cm2 = load.managers
    early = datetime(2026, 6, 1, tzinfo=UTC)
    rng = random.Random(20261130)
    tiers = ["high", "moderate", "low"]
    media = ["FACE", "PHONE", "VIDEOCONF", "EMAIL", "WRITTEN"]
    for i in range(9):
        tier = tiers[i % 3]
        manager = load.managers[(i // 3) % 3]
        member = load.add_member([[Version(early, a, manager, tier, date(2026, 7, 1))]])
        for year, month in MONTHS:
            for _ in range(rng.randint(0, 4)):
                day = rng.randint(1, 28)
                sent = datetime(year, month, day, rng.randint(8, 18), tzinfo=NC)
                status = "completed" if rng.random() < 0.85 else "not-done"
                member.contacts.append((sent, rng.choice(media), status))
    # Month boundaries in North Carolina time: 23:30 on 31 October is October (03:30 UTC on
    # 1 November); 00:30 on 1 November is November.
    edge = load.add_member([[Version(early, a, cm0, "low", date(2026, 7, 1))]])
    edge.contacts += [
        (_at("2026-10-31", 23, 30), "PHONE", "completed"),
        (_at("2026-11-01", 0, 30), "FACE", "completed"),
        (_at("2026-09-30", 23, 59), "VIDEOCONF", "completed"),
    ]
    # Tier high until recorded moderate on 15 October, and care manager cm1 → cm2 on
    # 20 November: October and November count with what held at their end.
    changing = load.add_member(
        [
            [
                Version(early, a, cm1, "high", date(2026, 7, 1)),
                Version(_at("2026-10-15"), a, cm1, "moderate", date(2026, 7, 1)),
                Version(_at("2026-11-20"), a, cm2, "moderate", date(2026, 7, 1)),
            ]
        ]
    )
    changing.contacts += [
        (_at("2026-09-03"), "FACE", "completed"),
        (_at("2026-10-03"), "PHONE", "completed"),
        (_at("2026-10-21"), "PHONE", "completed"),
        (_at("2026-11-25"), "FACE", "completed"),
    ]
    # A transfer from A to B on 11 October.
    moving = load.add_member(
        [
            [
                Version(early, a, cm0, "moderate", date(2026, 7, 1)),
                Version(
                    _at("2026-10-10"),
                    a,
                    cm0,
                    "moderate",
                    date(2026, 7, 1),
                    date(2026, 10, 10),
                    "finished",
                ),
            ],
            [Version(_at("2026-10-11"), b, cm2, "moderate", date(2026, 10, 11))],
        ]
    )
    moving.contacts += [
        (_at("2026-10-05"), "FACE", "completed"),
        (_at("2026-10-20"), "PHONE", "completed"),
    ]
    # New in October; enrollment closed at the end of September.
    newcomer = load.add_member([[Version(_at("2026-10-20"), a, cm1, "low", date(2026, 10, 20))]])
    newcomer.contacts.append((_at("2026-10-22"), "FACE", "completed"))
    load.add_member(
        [
            [
                Version(early, a, cm2, "low", date(2026, 7, 1)),
                Version(
                    _at("2026-09-30"),
                    a,
                    cm2,
                    "low",
                    date(2026, 7, 1),
                    date(2026, 9, 30),
                    "finished",
                ),
            ]
        ]
    )
    load.write(database_url)
    return load


def _expected_compliance(load: Caseload, organization: str) -> list[dict[str, Any]]:
    rows = []
    for member in load.members:
        for year, month in MONTHS:
            v = _enrollment(member, year, month)
            if v is None or v.organization != organization:
                continue
            start, end = _month_bounds(year, month)
            found = _qualifying(member, start, end)
            rows.append(
                {
                    "member": member.id,
                    "month": f"{year}-{month:02d}",
                    "care_manager": v.care_manager,
                    "acuity_tier": v.tier,
                    "contacts": len(found),
                    "in_person": sum(1 for _, medium in found if medium == "FACE"),
                    "required": REQUIRED[v.tier],
                    "compliant": len(found) >= REQUIRED[v.tier],
                }
            )
    return sorted(rows, key=lambda r: (r["member"], r["month"]))


def _report(client: httpx.Client, name: str, **query: str) -> dict[str, Any]:
    response = client.get(
        f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}/reports/{name}",
        params=query,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_contact_compliance_matches_the_caseload(client: httpx.Client, caseload: Caseload) -> None:
    for organization in (caseload.org_a, caseload.org_b):
        found = _report(
            client,
            "contact-compliance",
            organization=organization.split("/")[1],
            period="2026-09..2026-11",
        )
        rows = sorted(found["rows"], key=lambda r: (r["member"], r["month"]))
        assert rows == _expected_compliance(caseload, organization)
    edge = caseload.members[9]
    months = {
        r["month"]: r["contacts"]
        for r in _report(
            client,
            "contact-compliance",
            organization=caseload.org_a.split("/")[1],
            period="2026-09..2026-11",
        )["rows"]
        if r["member"] == edge.id
    }
    assert months == {"2026-09": 1, "2026-10": 1, "2026-11": 1}


def test_tier_and_care_manager_are_those_at_the_month_end(
    client: httpx.Client, caseload: Caseload
) -> None:
    changing = caseload.members[10]
    rows = _report(
        client,
        "contact-compliance",
        organization=caseload.org_a.split("/")[1],
        period="2026-09..2026-11",
    )["rows"]
    mine = {
        r["month"]: (r["acuity_tier"], r["care_manager"])
        for r in rows
        if r["member"] == changing.id
    }
    cm1, cm2 = caseload.managers[1], caseload.managers[2]
    assert mine == {
        "2026-09": ("high", cm1),
        "2026-10": ("moderate", cm1),
        "2026-11": ("moderate", cm2),
    }


def test_tcm_encounters_csv_lists_billable_member_months(
    client: httpx.Client, caseload: Caseload
) -> None:
    base = f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}"
    response = client.get(
        f"{base}/reports/tcm-encounters",
        params={"organization": caseload.org_a.split("/")[1], "period": "2026-10", "format": "csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert list(table[0]) == [
        "member",
        "month",
        "first_contact_date",
        "care_manager",
        "acuity_tier",
        "hcpcs",
        "modifiers",
    ]
    start, end = _month_bounds(2026, 10)
    expected = {}
    for member in caseload.members:
        v = _enrollment(member, 2026, 10)
        found = _qualifying(member, start, end)
        if v is not None and v.organization == caseload.org_a and found:
            expected[member.id] = (
                found[0][0].astimezone(NC).date().isoformat(),
                v.care_manager,
                v.tier,
            )
    got = {
        r["member"]: (r["first_contact_date"], r["care_manager"], r["acuity_tier"]) for r in table
    }
    assert got == expected
    assert {(r["hcpcs"], r["modifiers"]) for r in table} == {("T1017", "HT")}
    # 31 October 23:30 in North Carolina is an October contact.
    assert got[caseload.members[9].id][0] == "2026-10-31"


def test_member_month_reports_give_their_totals_and_a_page(
    client: httpx.Client, caseload: Caseload
) -> None:
    """contact-compliance and tcm-encounters compute their totals over every member-month
    in SQL and return a page of the rows (`_count`, `_offset`): the totals never depend on
    the page, and the pages are the report's rows in order."""
    org = caseload.org_a.split("/")[1]
    expected = _expected_compliance(caseload, caseload.org_a)
    always: dict[str, bool] = defaultdict(lambda: True)
    for row in expected:
        always[row["member"]] = always[row["member"]] and row["compliant"]
    contacts = sum(r["contacts"] for r in expected)
    summary = {
        "members": len(always),
        "members_compliant_every_month": sum(always.values()),
        "member_months": len(expected),
        "member_months_compliant": sum(1 for r in expected if r["compliant"]),
        "contacts": contacts,
        "in_person_share": round(sum(r["in_person"] for r in expected) / contacts, 3),
    }
    period = "2026-09..2026-11"
    whole = _report(client, "contact-compliance", organization=org, period=period, _count="all")
    assert whole["rows"] == expected
    assert whole["summary"] == summary
    assert whole["page"] == {"offset": 0, "size": len(expected), "total": len(expected)}
    for count, offset in (("5", "3"), ("0", "0"), ("4", str(len(expected) - 2)), ("3", "999")):
        page = _report(
            client,
            "contact-compliance",
            organization=org,
            period=period,
            _count=count,
            _offset=offset,
        )
        rows = expected[int(offset) : int(offset) + int(count)]
        assert page["rows"] == rows
        assert page["summary"] == summary
        assert page["page"] == {"offset": int(offset), "size": len(rows), "total": len(expected)}
    # Without `_count`, JSON gives a page of at most 100 rows (all of these).
    assert _report(client, "contact-compliance", organization=org, period=period)["rows"] == (
        expected
    )

    base = f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}"
    table = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    f"{base}/reports/tcm-encounters",
                    params={"organization": org, "period": period, "format": "csv"},
                ).text
            )
        )
    )
    billable = [r for r in expected if r["contacts"] > 0]
    assert len(table) == len(billable)
    assert [(r["month"], r["member"]) for r in table] == sorted(
        (r["month"], r["member"]) for r in billable
    )
    page = _report(
        client, "tcm-encounters", organization=org, period=period, _count="3", _offset="2"
    )
    assert [{k: str(v) for k, v in r.items()} for r in page["rows"]] == table[2:5]
    assert page["summary"] == {"billable_member_months": len(billable)}
    assert page["page"] == {"offset": 2, "size": 3, "total": len(billable)}
    # A CSV page, when asked for.
    response = client.get(
        f"{base}/reports/tcm-encounters",
        params={"organization": org, "period": period, "format": "csv", "_count": "2"},
    )
    assert list(csv.DictReader(io.StringIO(response.text))) == table[:2]


def test_other_reports_are_paged_after_their_summary(
    client: httpx.Client, caseload: Caseload
) -> None:
    org = caseload.org_a.split("/")[1]
    whole = _report(client, "timeliness", organization=org, period="2026-11", _count="all")
    page = _report(
        client, "timeliness", organization=org, period="2026-11", _count="2", _offset="1"
    )
    assert page["summary"] == whole["summary"]
    assert page["rows"] == whole["rows"][1:3]
    assert page["page"] == {"offset": 1, "size": 2, "total": whole["summary"]["members"]}


def test_caseload_counts_new_transferred_and_closed(
    client: httpx.Client, caseload: Caseload
) -> None:
    a = _report(
        client, "caseload", organization=caseload.org_a.split("/")[1], period="2026-09..2026-11"
    )["summary"]
    b = _report(
        client, "caseload", organization=caseload.org_b.split("/")[1], period="2026-09..2026-11"
    )["summary"]
    in_a_november = [
        m
        for m in caseload.members
        if (v := _enrollment(m, 2026, 11)) and v.organization == caseload.org_a
    ]
    assert a["members"] == len(in_a_november)
    assert (a["new"], a["transferred-out"], a["closed"], a["transferred-in"]) == (1, 1, 1, 0)
    assert (b["members"], b["transferred-in"], b["new"]) == (1, 1, 0)


def test_an_empty_period_has_no_rows(client: httpx.Client, caseload: Caseload) -> None:
    found = _report(
        client, "contact-compliance", organization=caseload.org_a.split("/")[1], period="2025-01"
    )
    assert found["rows"] == []
    assert found["summary"]["members"] == 0


def test_evaluate_measure_answers_a_measure_report(
    client: httpx.Client, caseload: Caseload
) -> None:
    response = client.get(
        "/Measure/contact-compliance/$evaluate-measure",
        params={"periodStart": "2026-09-01", "periodEnd": "2026-11-30", "subject": caseload.org_a},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["resourceType"] == "MeasureReport"
    assert report["type"] == "summary"
    expected = _expected_compliance(caseload, caseload.org_a)
    members: dict[str, bool] = defaultdict(lambda: True)
    for row in expected:
        members[row["member"]] = members[row["member"]] and row["compliant"]
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][0]["population"]}
    assert counts == {
        "initial-population": len(members),
        "denominator": len(members),
        "numerator": sum(members.values()),
    }
    stratifiers = {s["code"][0]["coding"][0]["code"] for s in report["group"][0]["stratifier"]}
    assert stratifiers == {"care-manager", "acuity-tier"}
    listed = client.get(
        "/Measure/contact-compliance/$evaluate-measure",
        params={
            "periodStart": "2026-09-01",
            "periodEnd": "2026-11-30",
            "subject": caseload.org_a,
            "reportType": "subject-list",
        },
    ).json()
    numerator = next(
        p for p in listed["group"][0]["population"] if p["code"]["coding"][0]["code"] == "numerator"
    )
    contained = {c["id"]: c for c in listed["contained"]}
    named = {
        e["item"]["reference"]
        for e in contained[numerator["subjectResults"]["reference"][1:]]["entry"]
    }
    assert named == {f"Patient/{m}" for m, ok in members.items() if ok}


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ({"period": "2026-13"}, "period"),
        ({"period": "2026-10..2026-09"}, "period"),
        ({"period": "2026-10", "organization": "x", "practitioner": "y"}, "organization"),
        ({"period": "2026-10", "colour": "blue"}, "colour"),
        ({}, "period"),
        ({"period": "2026-10", "format": "xlsx"}, "format"),
        ({"period": "2026-10", "_count": "-1"}, "_count"),
        ({"period": "2026-10", "_count": "ten"}, "_count"),
        ({"period": "2026-10", "_offset": "1.5"}, "_offset"),
    ],
)
def test_bad_report_requests_are_refused(
    client: httpx.Client, query: dict[str, str], where: str
) -> None:
    base = f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}"
    response = client.get(f"{base}/reports/contact-compliance", params=query)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert where in outcome["issue"][0]["expression"][0]
    assert client.get(f"{base}/reports/nonsense", params={"period": "2026-10"}).status_code == 400


def test_gaps_and_experience_reports_run(client: httpx.Client, caseload: Caseload) -> None:
    for name in ("gaps", "member-experience", "timeliness"):
        found = _report(
            client, name, organization=caseload.org_a.split("/")[1], period="2026-09..2026-11"
        )
        assert found["report"] == name
    timeliness = _report(
        client, "timeliness", organization=caseload.org_a.split("/")[1], period="2026-11"
    )
    in_a = [
        m
        for m in caseload.members
        if (v := _enrollment(m, 2026, 11)) and v.organization == caseload.org_a
    ]
    assert timeliness["summary"]["members"] == len(in_a)
    assert timeliness["summary"]["current_assessment_share"] == 0.0


def test_the_command_prints_a_table(
    caseload: Caseload,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cmfhir.cli import main

    monkeypatch.setenv("CMFHIR_DATABASE_URL", settings.database_url)
    assert (
        main(
            [
                "report",
                "contact-compliance",
                "--organization",
                caseload.org_a.split("/")[1],
                "--period",
                "2026-10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(f"contact-compliance — {caseload.org_a}, 2026-10")
    assert "care manager" in out
    expected = [
        r for r in _expected_compliance(caseload, caseload.org_a) if r["month"] == "2026-10"
    ]
    assert f"member months: {len(expected)}" in out
    # A page of the rows, as CSV: the header and two rows.
    command = ["report", "contact-compliance", "--organization", caseload.org_a.split("/")[1]]
    assert main([*command, "--period", "2026-10", "--format", "csv", "--count", "2"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["member"] for r in table] == [r["member"] for r in expected[:2]]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    children: list[dict[str, Any]] = plan.get("Plans", [])
    return [plan, *(n for child in children for n in _nodes(child))]


def test_each_report_reads_each_set_once(settings: Settings, caseload: Caseload) -> None:
    """The plans (EXPLAIN ANALYZE) of every report: no CTE of the period's sets is re-read
    per row of another (a nested loop over a CTE: quadratic), and no scan of `resource` or
    `resource_history` (rows are looked up by primary key from the index tables)."""

    async def explain() -> dict[str, dict[str, Any]]:
        config = load_report_config(settings.profiles_dir)
        scope = Scope(caseload.org_a.split("/")[1])
        found = {}
        async with open_context(settings) as ctx:
            for name in REPORTS:
                async with ctx.store.snapshot(TRUSTED) as repo:
                    parameters = _parameters(config, scope, parse_period("2026-09..2026-11"))
                    for part, p in (
                        await explain_report(repo, name, parameters, reads(name, scope))
                    ).items():
                        found[f"{name}/{part}"] = p["plan"]
        return found

    for report, plan in asyncio.run(explain()).items():
        for node in _nodes(plan):
            if node["Node Type"] == "CTE Scan" and node["CTE Name"] not in ("months", "bounds"):
                assert node["Actual Loops"] <= 1, (report, node["CTE Name"])
            if node.get("Relation Name") in ("resource", "resource_history"):
                # Looked up by key (a bitmap of one key is a lookup too), never scanned.
                assert node["Node Type"] != "Seq Scan", report
                if node["Node Type"] == "Bitmap Heap Scan":
                    assert node["Recheck Cond"].startswith("(rid = "), (report, node)
