"""Deterministic synthetic care-management caseload: staff created once, then one
transaction Bundle per member (urn:uuid fullUrls, POST entries) of about 60 R4B resources.

Member `i` under seed `s` depends only on `(s, i)`, so any subset can be regenerated alone.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from bench import vocab as v

__all__ = [
    "AS_OF",
    "Staff",
    "make_staff",
    "member_bundle",
    "member_bundles",
    "staff_bundle",
    "visit_bundle",
    "vital_sign",
]

Resource = dict[str, Any]

# The caseload's "today": fixed so that a seed always yields the same data.
AS_OF = date(2025, 6, 30)
_MEMBERS_PER_CARE_MANAGER = 50


@dataclass(frozen=True)
class Staff:
    """Ids (chosen by the harness, created with PUT) of the agency's staff and partners."""

    care_managers: tuple[str, ...]
    chws: tuple[str, ...]
    peer_supports: tuple[str, ...]
    pcps: tuple[str, ...]
    clinics: tuple[str, ...]
    hospitals: tuple[str, ...]
    agency: str

    def practitioners(self) -> Iterator[tuple[str, str]]:
        """(id, role code) of every practitioner."""
        for ids, role in (
            (self.care_managers, "care-manager"),
            (self.chws, "chw"),
            (self.peer_supports, "peer-support"),
            (self.pcps, "pcp"),
        ):
            for pid in ids:
                yield pid, role


def make_staff(members: int) -> Staff:
    managers = max(4, members // _MEMBERS_PER_CARE_MANAGER)
    return Staff(
        care_managers=tuple(f"cm-{n:04d}" for n in range(managers)),
        chws=tuple(f"chw-{n:04d}" for n in range(max(2, managers // 2))),
        peer_supports=tuple(f"peer-{n:04d}" for n in range(max(2, managers // 3))),
        pcps=tuple(f"pcp-{n:04d}" for n in range(max(4, managers))),
        clinics=tuple(f"clinic-{n:03d}" for n in range(max(3, managers // 4))),
        hospitals=tuple(f"hospital-{n:03d}" for n in range(4)),
        agency="agency",
    )


def _coding(system: str, code: str, display: str) -> Resource:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> Resource:
    return {"coding": [_coding(system, code, display)], "text": display}


def _name(rng: random.Random, gender: str) -> Resource:
    pool = {"female": v.GIVEN_FEMALE, "male": v.GIVEN_MALE}.get(gender, v.GIVEN_NEUTRAL)
    given = [rng.choice(pool)]
    if rng.random() < 0.4:
        given.append(rng.choice(v.GIVEN_NEUTRAL + pool))
    return {"use": "official", "family": rng.choice(v.FAMILY), "given": given}


def _address(rng: random.Random, use: str = "home") -> Resource:
    city, county, zip_code = rng.choice(v.NC_PLACES)
    return {
        "use": use,
        "line": [f"{rng.randint(10, 9999)} {rng.choice(v.STREETS)}"],
        "city": city,
        "district": county,
        "state": "NC",
        "postalCode": zip_code,
        "country": "US",
    }


def staff_bundle(staff: Staff) -> Resource:
    """A transaction creating (PUT) every Practitioner and Organization of `staff`."""
    rng = random.Random("staff")
    entries: list[Resource] = []

    def put(resource: Resource) -> None:
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": resource, "request": {"method": "PUT", "url": url}})

    put(
        {
            "resourceType": "Organization",
            "id": staff.agency,
            "active": True,
            "name": "Piedmont Care Management Agency",
            "type": [_concept(f"{v.LOCAL}/CodeSystem/org-type", "cma", "Care management agency")],
            # org-2: an organization's address is never a home.
            "address": [_address(rng, "work")],
        }
    )
    for ids, kind in ((staff.clinics, "Clinic"), (staff.hospitals, "Hospital")):
        for n, oid in enumerate(ids):
            address = _address(rng, "work")
            put(
                {
                    "resourceType": "Organization",
                    "id": oid,
                    "active": True,
                    "identifier": [{"system": v.NPI, "value": f"1{n:03d}{len(kind):02d}7777"}],
                    "name": f"{address['city']} {kind} {n}",
                    "address": [address],
                }
            )
    for n, (pid, role) in enumerate(staff.practitioners()):
        gender = rng.choice(("female", "male", "female", "other"))
        put(
            {
                "resourceType": "Practitioner",
                "id": pid,
                "active": True,
                "identifier": [{"system": v.NPI, "value": f"{1_500_000_000 + n}"}],
                "name": [_name(rng, gender)],
                "gender": gender,
                "qualification": [{"code": _concept(v.TEAM_ROLE, role, v.TEAM_ROLES[role])}],
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _when(day: date, minutes: int) -> str:
    """A dateTime on `day`, `minutes` after midnight, Eastern Standard Time."""
    return f"{day.isoformat()}T{minutes // 60:02d}:{minutes % 60:02d}:00-05:00"


def _quantity(value: float, decimals: int, unit: str, code: str) -> Resource:
    number: float | int = round(value, decimals) if decimals else round(value)
    return {"value": number, "unit": unit, "system": v.UCUM, "code": code}


class _Member:
    """Builds one member's transaction; `add` returns the urn:uuid to reference."""

    def __init__(self, seed: int, index: int, staff: Staff) -> None:
        self.rng = random.Random(f"{seed}:{index}")
        self.index = index
        self.staff = staff
        self.entries: list[Resource] = []
        self.patient = ""
        self.care_manager = staff.care_managers[index % len(staff.care_managers)]

    def add(self, resource: Resource) -> str:
        urn = f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        kind = resource["resourceType"]
        self.entries.append(
            {"fullUrl": urn, "resource": resource, "request": {"method": "POST", "url": kind}}
        )
        return urn

    def day_between(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randint(0, max(0, (end - start).days)))

    def subject(self) -> Resource:
        return {"reference": self.patient}

    def build(self) -> Resource:
        rng = self.rng
        acuity = rng.choices(v.ACUITY_TIERS, weights=(2, 5, 3))[0]
        enrolled = self.day_between(date(2022, 1, 1), date(2025, 3, 1))
        self.add_patient()
        team = self.add_care_team(enrolled)
        self.add_episode(acuity, enrolled, team)
        condition_count = rng.choices((1, 2, 3, 4, 5), weights=(1, 3, 4, 3, 1))[0]
        conditions = rng.sample(range(len(v.CONDITIONS)), condition_count)
        for c in conditions:
            self.add_condition(c, enrolled)
        self.add_encounters(acuity[0], enrolled, conditions)
        self.add_medications(conditions, enrolled)
        self.add_appointments(enrolled)
        goals = [self.add_goal(g, enrolled) for g in rng.sample(range(len(v.GOALS)), 2)]
        self.add_care_plan(enrolled, goals, team)
        for _ in range(rng.randint(1, 3)):
            self.add_assessment(enrolled)
        for _ in range(rng.randint(2, 7)):
            self.add_contact(enrolled)
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}

    def add_patient(self) -> None:
        rng = self.rng
        gender = rng.choices(("female", "male", "other", "unknown"), weights=(51, 46, 2, 1))[0]
        birth = self.day_between(date(1940, 1, 1), date(2007, 12, 31))
        patient: Resource = {
            "resourceType": "Patient",
            "identifier": [
                {"use": "usual", "system": v.MEMBER_ID, "value": f"M{self.index:07d}"},
                {"system": v.MEDICAID_ID, "value": f"{900_000_000 + self.index * 7919:d}"},
            ],
            "active": True,
            "name": [_name(rng, gender)],
            "telecom": [{"system": "phone", "value": f"919-555-{self.index % 10_000:04d}"}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [_address(rng)],
            "managingOrganization": {"reference": f"Organization/{self.staff.agency}"},
        }
        if gender in ("other", "unknown") or rng.random() < 0.02:
            code, display = rng.choice(v.GENDER_IDENTITIES)
            patient["extension"] = [
                {
                    "url": v.GENDER_IDENTITY_EXT,
                    "valueCodeableConcept": _concept(v.GENDER_IDENTITY_CS, code, display),
                }
            ]
        if rng.random() < 0.15:
            patient["communication"] = [
                {
                    "language": _concept("urn:ietf:bcp:47", "es", "Spanish"),
                    "preferred": True,
                }
            ]
        self.patient = self.add(patient)

    def add_care_team(self, enrolled: date) -> str:
        rng, staff = self.rng, self.staff
        members = [("care-manager", self.care_manager), ("pcp", rng.choice(staff.pcps))]
        if rng.random() < 0.6:
            members.append(("chw", rng.choice(staff.chws)))
        if rng.random() < 0.3:
            members.append(("peer-support", rng.choice(staff.peer_supports)))
        return self.add(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "name": "Care management team",
                "subject": self.subject(),
                "period": {"start": enrolled.isoformat()},
                "participant": [
                    {
                        "role": [_concept(v.TEAM_ROLE, role, v.TEAM_ROLES[role])],
                        "member": {"reference": f"Practitioner/{pid}"},
                    }
                    for role, pid in members
                ],
                "managingOrganization": [{"reference": f"Organization/{staff.agency}"}],
            }
        )

    def add_episode(self, acuity: tuple[str, str], enrolled: date, team: str) -> None:
        self.add(
            {
                "resourceType": "EpisodeOfCare",
                "identifier": [{"system": f"{v.LOCAL}/enrollment", "value": f"E{self.index:07d}"}],
                "status": "active",
                "type": [_concept(v.PROGRAM, "tcm", "Tailored Care Management")],
                "extension": [{"url": v.ACUITY_TIER_EXT, "valueCode": acuity[0]}],
                "patient": self.subject(),
                "managingOrganization": {"reference": f"Organization/{self.staff.agency}"},
                "period": {"start": enrolled.isoformat()},
                "careManager": {"reference": f"Practitioner/{self.care_manager}"},
                "team": [{"reference": team}],
            }
        )

    def add_condition(self, which: int, enrolled: date) -> None:
        code, display = v.CONDITIONS[which]
        onset = self.day_between(date(2005, 1, 1), enrolled)
        self.add(
            {
                "resourceType": "Condition",
                "clinicalStatus": _concept(v.CONDITION_CLINICAL, "active", "Active"),
                "verificationStatus": _concept(v.CONDITION_VER, "confirmed", "Confirmed"),
                "category": [
                    _concept(v.CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
                ],
                "code": _concept(v.SNOMED, code, display),
                "subject": self.subject(),
                "onsetDateTime": onset.isoformat(),
                "recordedDate": enrolled.isoformat(),
            }
        )

    def add_encounters(self, acuity: str, enrolled: date, conditions: list[int]) -> None:
        rng = self.rng
        start = enrolled - timedelta(days=365)
        ed_weight = {"high": 3.0, "moderate": 1.2, "low": 0.4}[acuity]
        kinds = ["AMB"] * rng.randint(4, 8)
        kinds += ["EMER"] * min(5, int(rng.expovariate(1 / ed_weight)))
        kinds += ["IMP"] * (rng.random() < ed_weight / 5) * rng.randint(1, 2)
        for kind in kinds:
            day = self.day_between(start, AS_OF)
            encounter = self.add_encounter(kind, day)
            self.add_vitals(day, encounter)
            if kind == "AMB" and rng.random() < 0.6:
                self.add_labs(day, encounter, conditions)

    def add_encounter(self, kind: str, day: date) -> str:
        rng = self.rng
        class_display, type_code, type_display = v.ENCOUNTER_TYPES[kind]
        minutes = rng.randint(7 * 60, 18 * 60)
        encounter: Resource = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": _coding(v.V3_ACT, kind, class_display),
            "type": [_concept(v.SNOMED, type_code, type_display)],
            "subject": self.subject(),
            "period": {"start": _when(day, minutes)},
        }
        if kind == "AMB":
            encounter["participant"] = [
                {"individual": {"reference": f"Practitioner/{rng.choice(self.staff.pcps)}"}}
            ]
            encounter["serviceProvider"] = {
                "reference": f"Organization/{rng.choice(self.staff.clinics)}"
            }
            encounter["period"]["end"] = _when(day, minutes + 30)
        else:
            stay = rng.randint(2, 9) if kind == "IMP" else 0
            end = day + timedelta(days=stay)
            encounter["period"]["end"] = _when(end, min(23 * 60, minutes + 240))
            encounter["serviceProvider"] = {
                "reference": f"Organization/{rng.choice(self.staff.hospitals)}"
            }
            if kind == "IMP":
                code, display = rng.choices(v.DISCHARGE_CODES, weights=(8, 1, 2))[0]
                encounter["hospitalization"] = {
                    "dischargeDisposition": _concept(v.DISCHARGE, code, display)
                }
        return self.add(encounter)

    def observation(
        self, category: str, code: Resource, day: date, encounter: str | None
    ) -> Resource:
        obs: Resource = {
            "resourceType": "Observation",
            "status": "final",
            "category": [_concept(v.OBS_CATEGORY, category, category.replace("-", " ").title())],
            "code": code,
            "subject": self.subject(),
            "effectiveDateTime": _when(day, self.rng.randint(8 * 60, 17 * 60)),
        }
        if encounter is not None:
            obs["encounter"] = {"reference": encounter}
        return obs

    def add_vitals(self, day: date, encounter: str) -> None:
        rng = self.rng
        bp = self.observation(
            "vital-signs", _concept(v.LOINC, "85354-9", "Blood pressure panel"), day, encounter
        )
        systolic = rng.gauss(134, 16)
        bp["component"] = [
            {
                "code": _concept(v.LOINC, "8480-6", "Systolic blood pressure"),
                "valueQuantity": _quantity(systolic, 0, "mm[Hg]", "mm[Hg]"),
            },
            {
                "code": _concept(v.LOINC, "8462-4", "Diastolic blood pressure"),
                "valueQuantity": _quantity(systolic * 0.62, 0, "mm[Hg]", "mm[Hg]"),
            },
        ]
        self.add(bp)
        extra = rng.sample(v.VITALS, rng.randint(0, 1))
        for code, display, unit, ucum, low, high, decimals in extra:
            obs = self.observation("vital-signs", _concept(v.LOINC, code, display), day, encounter)
            obs["valueQuantity"] = _quantity(rng.uniform(low, high), decimals, unit, ucum)
            self.add(obs)

    def add_labs(self, day: date, encounter: str, conditions: list[int]) -> None:
        rng = self.rng
        labs = [v.LABS[0]] if 0 in conditions else []
        labs += rng.sample(v.LABS[1:], rng.randint(0, 2))
        for code, display, unit, ucum, low, high, decimals in labs:
            obs = self.observation("laboratory", _concept(v.LOINC, code, display), day, encounter)
            obs["valueQuantity"] = _quantity(rng.uniform(low, high), decimals, unit, ucum)
            self.add(obs)

    def add_medications(self, conditions: list[int], enrolled: date) -> None:
        rng = self.rng
        count = min(len(v.MEDICATIONS), len(conditions) + rng.randint(0, 1))
        adherent = rng.random() < 0.65  # the member's overall pattern
        for med in rng.sample(range(len(v.MEDICATIONS)), count):
            code, display = v.MEDICATIONS[med]
            concept = _concept(v.RXNORM, code, display)
            started = self.day_between(date(2020, 1, 1), enrolled)
            self.add(
                {
                    "resourceType": "MedicationStatement",
                    "status": "active",
                    "medicationCodeableConcept": concept,
                    "subject": self.subject(),
                    "effectivePeriod": {"start": started.isoformat()},
                    "dateAsserted": enrolled.isoformat(),
                    "informationSource": {"reference": f"Practitioner/{self.care_manager}"},
                }
            )
            supply = rng.choice((30, 30, 90))
            fills = rng.randint(2, 6) if supply == 30 else rng.randint(2, 3)
            gaps = [
                supply + (rng.randint(-3, 4) if adherent else rng.randint(12, 60))
                for _ in range(fills - 1)
            ]
            day = AS_OF - timedelta(days=sum(gaps) + rng.randint(0, supply))
            for n in range(fills):
                self.add(
                    {
                        "resourceType": "MedicationDispense",
                        "status": "completed",
                        "medicationCodeableConcept": concept,
                        "subject": self.subject(),
                        "quantity": _quantity(supply, 0, "tablet", "{tbl}"),
                        "daysSupply": _quantity(supply, 0, "days", "d"),
                        "whenHandedOver": _when(day, rng.randint(9 * 60, 20 * 60)),
                    }
                )
                if n < len(gaps):
                    day += timedelta(days=gaps[n])

    def add_appointments(self, enrolled: date) -> None:
        rng = self.rng
        for _ in range(rng.randint(3, 8)):
            day = self.day_between(enrolled, AS_OF + timedelta(days=60))
            if day > AS_OF:
                status = "booked"
            else:
                status = rng.choices(("fulfilled", "noshow", "cancelled"), weights=(75, 18, 7))[0]
            minutes = rng.randint(8 * 60, 16 * 60)
            who = rng.choice((self.care_manager, rng.choice(self.staff.pcps)))
            self.add(
                {
                    "resourceType": "Appointment",
                    "status": status,
                    "serviceType": [_concept(v.SNOMED, "410606002", "Social service procedure")],
                    "description": "Care management follow-up",
                    "start": _when(day, minutes),
                    "end": _when(day, minutes + 30),
                    "participant": [
                        {"actor": self.subject(), "status": "accepted"},
                        {"actor": {"reference": f"Practitioner/{who}"}, "status": "accepted"},
                    ],
                }
            )

    def add_goal(self, which: int, enrolled: date) -> str:
        text, loinc, limit, unit = v.GOALS[which]
        return self.add(
            {
                "resourceType": "Goal",
                "lifecycleStatus": "active",
                "description": {"text": text},
                "subject": self.subject(),
                "startDate": enrolled.isoformat(),
                "target": [
                    {
                        "measure": _concept(v.LOINC, loinc, text),
                        "detailQuantity": _quantity(limit, 1, unit, unit),
                        "dueDate": (enrolled + timedelta(days=180)).isoformat(),
                    }
                ],
            }
        )

    def add_care_plan(self, enrolled: date, goals: list[str], team: str) -> None:
        self.add(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "title": "Care management plan",
                "category": [_concept(v.SNOMED, "734163000", "Care plan")],
                "subject": self.subject(),
                "period": {"start": enrolled.isoformat()},
                "author": {"reference": f"Practitioner/{self.care_manager}"},
                "careTeam": [{"reference": team}],
                "goal": [{"reference": goal} for goal in goals],
                "activity": [
                    {
                        "detail": {
                            "code": _concept(v.CONTACT_KIND, "outreach-call", "Outreach call"),
                            "status": "in-progress",
                            "description": "Monthly outreach call",
                        }
                    }
                ],
            }
        )

    def add_assessment(self, enrolled: date) -> None:
        rng = self.rng
        answers = [rng.choices((0, 1, 2, 3), weights=(5, 3, 2, 1))[0] for _ in range(9)]
        day = self.day_between(enrolled, AS_OF)
        authored = _when(day, rng.randint(9 * 60, 16 * 60))
        self.add(
            {
                "resourceType": "QuestionnaireResponse",
                "questionnaire": "http://loinc.org/q/44249-1",
                "status": "completed",
                "subject": self.subject(),
                "authored": authored,
                "author": {"reference": f"Practitioner/{self.care_manager}"},
                "item": [
                    *(
                        {"linkId": f"q{n + 1}", "answer": [{"valueInteger": a}]}
                        for n, a in enumerate(answers)
                    ),
                    {"linkId": "total", "answer": [{"valueInteger": sum(answers)}]},
                ],
            }
        )
        code, display, _low, _high = v.SURVEYS[0]
        obs = self.observation("survey", _concept(v.LOINC, code, display), day, None)
        obs["valueQuantity"] = _quantity(sum(answers), 0, "{score}", "{score}")
        self.add(obs)

    def add_contact(self, enrolled: date) -> None:
        rng = self.rng
        code, display, medium = rng.choice(v.CONTACT_KINDS)
        day = self.day_between(enrolled, AS_OF)
        self.add(
            {
                "resourceType": "Communication",
                "status": rng.choices(("completed", "not-done"), weights=(4, 1))[0],
                "category": [_concept(v.CONTACT_KIND, code, display)],
                "medium": [_concept(v.PARTICIPATION_MODE, medium, medium)],
                "subject": self.subject(),
                "sent": _when(day, rng.randint(8 * 60, 18 * 60)),
                "sender": {"reference": f"Practitioner/{self.care_manager}"},
                "recipient": [self.subject()],
                "payload": [{"contentString": f"{display} with member"}],
            }
        )


def member_bundle(seed: int, index: int, staff: Staff) -> Resource:
    """The transaction Bundle of member `index`."""
    return _Member(seed, index, staff).build()


def member_bundles(seed: int, members: int, staff: Staff) -> Iterator[Resource]:
    for index in range(members):
        yield member_bundle(seed, index, staff)


def _follow_up(seed: int, index: int, staff: Staff, patient_id: str) -> _Member:
    """A builder for new data about an already loaded member (`index` seeds its randomness)."""
    member = _Member(seed, index, staff)
    member.patient = f"Patient/{patient_id}"
    return member


def visit_bundle(seed: int, index: int, staff: Staff, patient_id: str, day: date) -> Resource:
    """A follow-up visit of a loaded member as one transaction: an ambulatory Encounter with
    its vital signs and a care-manager contact (3 or 4 entries)."""
    member = _follow_up(seed, index, staff, patient_id)
    encounter = member.add_encounter("AMB", day)
    member.add_vitals(day, encounter)
    member.add_contact(day)
    return {"resourceType": "Bundle", "type": "transaction", "entry": member.entries}


def vital_sign(seed: int, index: int, staff: Staff, patient_id: str, day: date) -> Resource:
    """One vital-sign Observation (weight, BMI or heart rate) of a loaded member."""
    member = _follow_up(seed, index, staff, patient_id)
    code, display, unit, ucum, low, high, decimals = member.rng.choice(v.VITALS)
    obs = member.observation("vital-signs", _concept(v.LOINC, code, display), day, None)
    obs["valueQuantity"] = _quantity(member.rng.uniform(low, high), decimals, unit, ucum)
    return obs
