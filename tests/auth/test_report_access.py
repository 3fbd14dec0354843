"""The care-management reports narrowed by the access predicate, over HTTP with auth on: a
supervisor's figures are those of their organization's members, a care manager's those of
their caseload, worked out here from what the test wrote (not by the reports' SQL); a
member of another organization is never counted, a contact labelled sensitive is counted
only for a client allowed to see it, and a token that may not search what a report reads
gets 403."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from tests.auth.conftest import Bearer, Smart
from tests.reports.test_report_timeliness import (
    RULE,
    SATISFACTION,
    _answer,
    _encounter,
    _issue,
    _response,
)
from tests.reports.test_reports import (
    NC,
    REQUIRED,
    Caseload,
    Member,
    Version,
    _contact,
    _enrollment,
    _month_bounds,
    _qualifying,
)

MONTHS = [(2026, 9), (2026, 10)]
PERIOD = "2026-09..2026-10"
ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"
STAFF_SCOPE = "user/*.rs"
# Contact-satisfaction answers: (index of the member, score), all on 7 and 8 October.
ANSWERS = [(0, 5), (1, 4), (2, 4), (0, 3), (1, 5), (2, 2), (5, 1), (6, 1)]


@dataclass
class World:
    load: Caseload
    supervisors: dict[str, str]  # organization → Practitioner id of its supervisor
    active: dict[str, set[str]]  # organization → members with an active enrollment there
    caseloads: dict[str, set[str]]  # care manager → members they manage now
    labelled: str  # the member with a contact labelled PSY
    closed: str  # the member whose only enrollment closed in September
    mover: str  # the member who moved from B to A on 11 October
    reassigned: str  # the member whose care manager changed from cm0 to cm1 on 5 October


def _id(reference: str) -> str:
    return reference.split("/")[1]


@pytest.fixture(scope="module")
def world(smart: Smart) -> World:
    system = smart.system()
    http = httpx.Client(
        base_url=smart.base, headers={"Authorization": f"Bearer {system.token}"}, timeout=60
    )
    load = Caseload(http)
    a, b = load.org_a, load.org_b
    cm0, cm1, cm2 = load.managers
    early = datetime(2026, 6, 1, tzinfo=UTC)
    rng = random.Random(20261201)
    layout = [(a, cm0, "high"), (a, cm0, "moderate"), (a, cm0, "low"), (a, cm1, "high")]
    layout += [(a, cm1, "low"), (b, cm2, "moderate"), (b, cm2, "high"), (b, cm2, "low")]
    for organization, manager, tier in layout:
        member = load.add_member([[Version(early, organization, manager, tier, date(2026, 7, 1))]])
        for year, month in MONTHS:
            for _ in range(rng.randint(0, 3)):
                sent = datetime(year, month, rng.randint(1, 28), rng.randint(8, 18), tzinfo=NC)
                medium = rng.choice(["FACE", "PHONE", "VIDEOCONF", "EMAIL"])
                member.contacts.append((sent, medium, "completed"))
    # Moved from B to A on 11 October: now in A's caseload (cm1), no longer in B's.
    mover = load.add_member(
        [
            [Version(early, b, cm2, "moderate", date(2026, 7, 1), date(2026, 10, 10), "finished")],
            [Version(early, a, cm1, "moderate", date(2026, 10, 11))],
        ]
    )
    mover.contacts += [
        (datetime(2026, 9, 8, 10, tzinfo=NC), "PHONE", "completed"),
        (datetime(2026, 10, 20, 10, tzinfo=NC), "FACE", "completed"),
    ]
    # Enrolled at A until 30 September: no one's caseload any more.
    closed = load.add_member(
        [[Version(early, a, cm0, "low", date(2026, 7, 1), date(2026, 9, 30), "finished")]]
    )
    closed.contacts.append((datetime(2026, 9, 15, 10, tzinfo=NC), "PHONE", "completed"))
    # At A with cm0 until the enrollment was recorded with cm1 on 5 October.
    reassigned = load.add_member(
        [
            [
                Version(early, a, cm0, "low", date(2026, 7, 1)),
                Version(datetime(2026, 10, 5, 9, tzinfo=NC), a, cm1, "low", date(2026, 7, 1)),
            ]
        ]
    )
    reassigned.contacts += [
        (datetime(2026, 9, 9, 10, tzinfo=NC), "FACE", "completed"),
        (datetime(2026, 10, 9, 10, tzinfo=NC), "PHONE", "completed"),
    ]
    load.write(smart.database_url)

    supervisors = {}
    for organization in (a, b):
        supervisor = load._create({"resourceType": "Practitioner", "name": [{"family": "Sup"}]})
        load._create(
            {
                "resourceType": "PractitionerRole",
                "active": True,
                "practitioner": {"reference": supervisor},
                "organization": {"reference": organization},
                "code": [{"coding": [{"system": ROLE, "code": "supervisor"}]}],
            }
        )
        supervisors[organization] = _id(supervisor)
    members = load.members
    # A contact labelled psychiatric (42 CFR Part 2 and friends), with no Consent.
    labelled = members[0]
    sensitive = _contact(labelled.id, datetime(2026, 10, 2, 11, tzinfo=NC), "PHONE", "completed")
    sensitive["meta"] = {
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
    }
    load._create(sensitive)
    # Care gaps (a rule the engine never raises for these members), satisfaction answers,
    # and a discharge.
    for member in (members[0], members[3], members[5], mover):
        load._create(_issue(member.id, "open-gap", "2026-09-10T10:00:00-04:00", None))
    load._create(
        _issue(
            members[1].id, "closed-gap", "2026-09-01T10:00:00-04:00", "2026-09-04T10:00:00-04:00"
        )
    )
    for index, score in ANSWERS:
        authored = "2026-10-07" if index < 5 else "2026-10-08"
        load._create(_response(members[index].id, SATISFACTION, authored, [_answer(score)]))
    for index, end in ((3, "2026-10-03T10:00:00-04:00"), (6, "2026-10-04T10:00:00-04:00")):
        encounter = _encounter(members[index].id, "IMP", end)
        encounter["period"]["start"] = "2026-10-01T08:00:00-04:00"
        load._create(encounter)
    http.close()

    active = {
        a: {m.id for m in members[:5]} | {mover.id, reassigned.id},
        b: {m.id for m in members[5:8]},
    }
    caseloads = {
        cm0: {m.id for m in members[:3]},
        cm1: {members[3].id, members[4].id, mover.id, reassigned.id},
        cm2: {m.id for m in members[5:8]},
    }
    return World(
        load, supervisors, active, caseloads, labelled.id, closed.id, mover.id, reassigned.id
    )


def _report(bearer: Bearer, name: str, **query: str) -> dict[str, Any]:
    response = bearer.get(f"{bearer.base.removesuffix('/fhir')}/reports/{name}", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def _supervisor(smart: Smart, world: World, organization: str) -> Bearer:
    return smart.as_token(STAFF_SCOPE, fhir_user=f"Practitioner/{world.supervisors[organization]}")


def _visible(world: World, members: set[str]) -> list[Member]:
    return [m for m in world.load.members if m.id in members]


MemberMonths = frozenset[tuple[str, str]]


def _assigned(
    world: World, organization: str | None = None, manager: str | None = None
) -> MemberMonths:
    """The member-months whose enrollment (as recorded at the month's end) was at
    `organization` or with `manager`: a report for a past month counts them for that
    organization's supervisor or that care manager, whoever holds the member now."""
    return frozenset(
        (member.id, f"{year}-{month:02d}")
        for member in world.load.members
        for year, month in MONTHS
        if (v := _enrollment(member, year, month)) is not None
        and (v.organization == organization or v.care_manager == manager)
    )


def _compliance(
    world: World,
    members: set[str],
    organization: str | None,
    sensitive: bool = False,
    assigned: MemberMonths = frozenset(),
) -> list[dict[str, Any]]:
    rows = []
    for member in world.load.members:
        for year, month in MONTHS:
            v = _enrollment(member, year, month)
            if v is None or (organization is not None and v.organization != organization):
                continue
            if member.id not in members and (member.id, f"{year}-{month:02d}") not in assigned:
                continue
            found = _qualifying(member, *_month_bounds(year, month))
            extra = sensitive and member.id == world.labelled and month == 10
            contacts = len(found) + extra
            rows.append(
                {
                    "member": member.id,
                    "month": f"{year}-{month:02d}",
                    "care_manager": v.care_manager,
                    "acuity_tier": v.tier,
                    "contacts": contacts,
                    "in_person": sum(1 for _, medium in found if medium == "FACE"),
                    "required": REQUIRED[v.tier],
                    "compliant": contacts >= REQUIRED[v.tier],
                }
            )
    return sorted(rows, key=lambda r: (r["member"], r["month"]))


def _tcm(
    world: World, members: set[str], organization: str | None, assigned: MemberMonths
) -> set[tuple[str, ...]]:
    return {
        (r["member"], r["month"], r["care_manager"], r["acuity_tier"])
        for r in _compliance(world, members, organization, assigned=assigned)
        if r["contacts"] > 0
    }


def _at_end(
    world: World, members: set[str], organization: str | None, assigned: MemberMonths
) -> dict[str, str]:
    """Member → care manager, for the members enrolled in the period's last month."""
    found = {}
    last = f"{MONTHS[-1][0]}-{MONTHS[-1][1]:02d}"
    for member in world.load.members:
        if member.id not in members and (member.id, last) not in assigned:
            continue
        v = _enrollment(member, *MONTHS[-1])
        if v is not None and (organization is None or v.organization == organization):
            found[member.id] = v.care_manager
    return found


def _query(organization: str | None) -> dict[str, str]:
    return {"period": PERIOD} | ({"organization": _id(organization)} if organization else {})


def _check_contacts(
    bearer: Bearer,
    world: World,
    members: set[str],
    organization: str | None,
    assigned: MemberMonths,
) -> None:
    """The contact-compliance rows for `bearer` are those of `members` and of the
    `assigned` member-months (in `organization`)."""
    compliance = _report(bearer, "contact-compliance", **_query(organization))["rows"]
    assert sorted(compliance, key=lambda r: (r["member"], r["month"])) == _compliance(
        world, members, organization, assigned=assigned
    )


def _check_every_report(
    bearer: Bearer,
    world: World,
    members: set[str],
    organization: str | None,
    assigned: MemberMonths,
) -> None:
    """Each report's figures for `bearer` are those of `members` and of the `assigned`
    member-months (in `organization`)."""
    query = _query(organization)
    _check_contacts(bearer, world, members, organization, assigned)
    tcm = _report(bearer, "tcm-encounters", **query)["rows"]
    assert {(r["member"], r["month"], r["care_manager"], r["acuity_tier"]) for r in tcm} == _tcm(
        world, members, organization, assigned
    )

    at_end = _at_end(world, members, organization, assigned)
    caseload = _report(bearer, "caseload", **query)["rows"]
    by_manager = {
        (r["care_manager"], r["acuity_tier"]): r["count"]
        for r in caseload
        if r["kind"] == "members"
    }
    expected: Counter[tuple[str, str]] = Counter()
    for member in _visible(world, set(at_end)):
        v = _enrollment(member, *MONTHS[-1])
        assert v is not None
        expected[(v.care_manager, v.tier)] += 1
    assert by_manager == dict(expected)

    timeliness = _report(bearer, "timeliness", **query)
    assert {r["member"] for r in timeliness["rows"]} == set(at_end)
    discharged = {m.id for m in _visible(world, set(at_end))} & {
        world.load.members[3].id,
        world.load.members[6].id,
    }
    assert {d["member"] for d in timeliness["discharges"]} == discharged

    gaps = _report(bearer, "gaps", **query)["rows"]
    issues = {0: "open-gap", 3: "open-gap", 5: "open-gap", 1: "closed-gap"}
    expected_gaps: Counter[tuple[str, str]] = Counter()
    for index, status in issues.items():
        member = world.load.members[index].id
        if member in at_end:
            expected_gaps[(status, at_end[member])] += 1
    if world.mover in at_end:
        expected_gaps[("open-gap", at_end[world.mover])] += 1
    found_gaps = {
        (r["gap_status"], r["care_manager"]): r["count"] for r in gaps if r["rule"] == RULE
    }
    assert found_gaps == dict(expected_gaps)

    experience = _report(bearer, "member-experience", **query)["rows"]
    scores: dict[str, list[int]] = {}
    for index, score in ANSWERS:
        member = world.load.members[index]
        v = _enrollment(member, 2026, 10)
        seen = member.id in members or (member.id, "2026-10") in assigned
        if seen and v and (organization is None or v.organization == organization):
            scores.setdefault(v.care_manager, []).append(score)
    shown = {
        r["care_manager"]: (r["responses"], r["mean"], r["suppressed"])
        for r in experience
        if r["item"] == "overall"
    }
    assert shown == {
        manager: (len(s), round(statistics.mean(s), 2), False)
        if len(s) >= 5
        else (None, None, True)
        for manager, s in scores.items()
    }


def test_a_supervisor_sees_their_organizations_members(smart: Smart, world: World) -> None:
    a, b = world.load.org_a, world.load.org_b
    for organization, other in ((a, b), (b, a)):
        supervisor = _supervisor(smart, world, organization)
        _check_every_report(
            supervisor,
            world,
            world.active[organization],
            organization,
            _assigned(world, organization=organization),
        )
        # Asked for the other organization: only their own members who were enrolled there
        # (A's supervisor sees the member who moved from B in September); B's members never.
        rows = _report(supervisor, "contact-compliance", organization=_id(other), period=PERIOD)[
            "rows"
        ]
        assert {r["member"] for r in rows} == ({world.mover} if organization == a else set())
    # Without an organization: the same members (the supervisor sees no others), each with
    # every enrollment of theirs in the period.
    _check_contacts(
        _supervisor(smart, world, a), world, world.active[a], None, _assigned(world, organization=a)
    )


def test_a_care_manager_sees_their_caseload(smart: Smart, world: World) -> None:
    # cm1 gained the member who moved in October, cm2 lost them; cm0 only differs by data.
    for manager in world.load.managers[1:]:
        token = smart.as_token(STAFF_SCOPE, fhir_user=manager)
        _check_every_report(
            token, world, world.caseloads[manager], None, _assigned(world, manager=manager)
        )
    cm0 = world.load.managers[0]
    token = smart.as_token(STAFF_SCOPE, fhir_user=cm0)
    _check_contacts(token, world, world.caseloads[cm0], None, _assigned(world, manager=cm0))


def test_who_left_counts_where_they_were_and_what_is_sensitive_only_where_visible(
    smart: Smart, world: World
) -> None:
    a, b = world.load.org_a, world.load.org_b
    supervisor = _supervisor(smart, world, a)
    system = smart.system()  # system/*.cruds with the sensitive scope
    mine = _report(supervisor, "contact-compliance", organization=_id(a), period=PERIOD)["rows"]
    everything = _report(system, "contact-compliance", organization=_id(a), period=PERIOD)["rows"]
    # The member whose enrollment at A closed in September is no one's now, but September
    # was A's: the supervisor counts it, as the backend client does.
    assert {r["month"] for r in mine if r["member"] == world.closed} == {"2026-09"}
    # The PSY-labelled contact: counted for the backend client allowed to see it, not for
    # a supervisor without the member's Consent.
    members = world.active[a] | {world.closed}
    assert sorted(everything, key=lambda r: (r["member"], r["month"])) == _compliance(
        world, members, a, sensitive=True
    )
    october = {r["member"]: r["contacts"] for r in mine if r["month"] == "2026-10"}
    listed = {r["member"]: r["contacts"] for r in everything if r["month"] == "2026-10"}
    assert listed[world.labelled] == october[world.labelled] + 1
    assert {k: v for k, v in listed.items() if k != world.labelled} == {
        k: v for k, v in october.items() if k != world.labelled
    }
    # Transfers and closures count for whoever held the enrollment: A's closure for A's
    # supervisor, the move out of B for B's supervisor (who no longer sees the member).
    for who in (system, supervisor):
        assert (
            _report(who, "caseload", organization=_id(a), period=PERIOD)["summary"]["closed"] == 1
        )
    for who in (system, _supervisor(smart, world, b)):
        out_b = _report(who, "caseload", organization=_id(b), period=PERIOD)["summary"]
        assert out_b["transferred-out"] == 1


def test_a_member_who_left_a_caseload_mid_period_counts_in_the_months_before(
    smart: Smart, world: World
) -> None:
    cm0, cm1, cm2 = world.load.managers
    months: dict[tuple[str, str], dict[str, str]] = {}
    for manager in (cm0, cm1, cm2):
        token = smart.as_token(STAFF_SCOPE, fhir_user=manager)
        for member in (world.reassigned, world.mover):
            rows = _report(token, "contact-compliance", period=PERIOD)["rows"]
            months[(manager, member)] = {
                r["month"]: r["care_manager"] for r in rows if r["member"] == member
            }
    # Reassigned from cm0 to cm1 on 5 October (a new version of the same enrollment): cm0
    # keeps September; cm1, whose caseload the member is in now, sees both months.
    assert months[(cm0, world.reassigned)] == {"2026-09": cm0}
    assert months[(cm1, world.reassigned)] == {"2026-09": cm0, "2026-10": cm1}
    assert months[(cm2, world.reassigned)] == {}
    # Moved from B (cm2) to A (cm1) on 11 October: cm2 keeps September.
    assert months[(cm2, world.mover)] == {"2026-09": cm2}
    assert months[(cm1, world.mover)] == {"2026-09": cm2, "2026-10": cm1}
    # The billable months follow: cm0's September claim for the reassigned member stays.
    token = smart.as_token(STAFF_SCOPE, fhir_user=cm0)
    tcm = _report(token, "tcm-encounters", period=PERIOD)["rows"]
    assert {(r["member"], r["month"]) for r in tcm if r["member"] == world.reassigned} == {
        (world.reassigned, "2026-09")
    }


def test_evaluate_measure_is_narrowed(smart: Smart, world: World) -> None:
    a = world.load.org_a
    supervisor = _supervisor(smart, world, a)
    response = supervisor.get(
        "/Measure/contact-compliance/$evaluate-measure",
        params={"periodStart": "2026-09-01", "periodEnd": "2026-10-31", "subject": a},
    )
    assert response.status_code == 200, response.text
    expected: dict[str, bool] = {}
    for row in _compliance(world, world.active[a], a, assigned=_assigned(world, organization=a)):
        expected[row["member"]] = expected.get(row["member"], True) and row["compliant"]
    group = response.json()["group"][0]
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
    assert counts == {
        "initial-population": len(expected),
        "denominator": len(expected),
        "numerator": sum(expected.values()),
    }


@pytest.mark.parametrize(
    ("scope", "who", "report", "missing"),
    [
        ("user/Patient.rs user/EpisodeOfCare.rs", "cm", "contact-compliance", "Communication"),
        ("user/Patient.rs user/EpisodeOfCare.rs", "cm", "gaps", "DetectedIssue"),
        ("user/Patient.rs user/Communication.rs", "cm", "tcm-encounters", "EpisodeOfCare"),
        ("patient/*.rs", "patient", "caseload", "staff"),
        ("system/Patient.rs", "system", "caseload", "EpisodeOfCare"),
    ],
    ids=["no-communication", "no-detected-issue", "no-episode", "patient", "system-patient-only"],
)
def test_a_token_without_the_needed_scope_is_refused(
    smart: Smart, world: World, scope: str, who: str, report: str, missing: str
) -> None:
    member = world.load.members[0].id
    if who == "system":
        answer = smart.backend_token(smart.system_client, scope)
        assert answer.status_code == 200, answer.text
        bearer = smart.bearer(answer.json()["access_token"])
    elif who == "patient":
        bearer = smart.as_token(scope, fhir_user=f"Patient/{member}", patient=member)
    else:
        bearer = smart.as_token(scope, fhir_user=world.load.managers[0])
    root = smart.base.removesuffix("/fhir")
    for response in (
        bearer.get(f"{root}/reports/{report}", params={"period": PERIOD}),
        bearer.get(
            f"/Measure/{report}/$evaluate-measure",
            params={"periodStart": "2026-09-01", "periodEnd": "2026-10-31"},
        ),
    ):
        assert response.status_code == 403, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "forbidden"
        assert missing in outcome["issue"][0]["diagnostics"]
    # The same token may run a report whose types it may search.
    if who == "cm" and missing != "EpisodeOfCare":
        assert bearer.get(f"{root}/reports/caseload", params={"period": PERIOD}).status_code == 200
