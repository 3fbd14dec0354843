"""HL7 v2 segments to FHIR resources, as the HL7 v2-to-FHIR IG maps them
(https://build.fhir.org/ig/HL7/v2-to-fhir/, segment maps PID[Patient], PV1[Encounter],
NK1[RelatedPerson], DG1[Condition], IN1[Coverage]). Pure: resources in, resources out;
references to the patient and encounter are whatever the caller passes."""

from __future__ import annotations

from typing import Any

from cmfhir.exchange.hl7v2.datatypes import (
    SID_BASE,
    address,
    codeable,
    contact_point,
    fhir_date,
    fhir_datetime,
    human_name,
    identifier,
    system_of_authority,
)
from cmfhir.exchange.hl7v2.message import Segment, V2Error, V2Message, component

__all__ = [
    "ACT_CODE",
    "attending",
    "condition",
    "coverage",
    "discharge_disposition",
    "encounter_fields",
    "location",
    "patient_fields",
    "patient_identifiers",
    "related_person",
    "visit_identifier",
]

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_V2_0004 = "http://terminology.hl7.org/CodeSystem/v2-0004"
_CLASS = {
    "E": (ACT_CODE, "EMER", "emergency"),
    "I": (ACT_CODE, "IMP", "inpatient encounter"),
    "O": (ACT_CODE, "AMB", "ambulatory"),
    "P": (ACT_CODE, "PRENC", "pre-admission"),
}
_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown"}
_MARITAL = set("ADILMPSTUW")

# NUBC UB-04 patient discharge status (what US senders put in PV1-36) to the FHIR
# discharge-disposition codes; the sender's code is kept beside it.
NUBC = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
DISCHARGE = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
_NUBC_TO_FHIR = {
    "01": "home",
    "02": "hosp",
    "03": "snf",
    "04": "other-hcf",
    "05": "other-hcf",
    "06": "home",
    "07": "aadvice",
    "20": "exp",
    "21": "oth",
    "40": "exp",
    "41": "exp",
    "42": "exp",
    "43": "hosp",
    "50": "oth",
    "51": "oth",
    "61": "snf",
    "62": "rehab",
    "63": "long",
    "64": "snf",
    "65": "psy",
    "66": "hosp",
    "69": "oth",
    "70": "other-hcf",
}
_FHIR_DISPOSITIONS = {
    "home": "Home",
    "alt-home": "Alternative home",
    "other-hcf": "Other healthcare facility",
    "hosp": "Hospice",
    "long": "Long-term care",
    "aadvice": "Left against advice",
    "exp": "Expired",
    "psy": "Psychiatric hospital",
    "rehab": "Rehabilitation",
    "snf": "Skilled nursing facility",
    "oth": "Other",
}


def _required(segment: Segment | None, name: str) -> Segment:
    if segment is None:
        raise V2Error(f"The message has no {name} segment", code="100", segment=name)
    return segment


def patient_identifiers(message: V2Message) -> list[dict[str, Any]]:
    """PID-3 (every repetition with a value): what the patient is matched on."""
    pid = _required(message.first("PID"), "PID")
    authority = _sending_authority(message)
    found = [
        ident
        for rep in pid[3].repetitions
        if (ident := identifier(rep, default_authority=authority)) is not None
    ]
    if not found:
        raise V2Error(
            "PID-3 (patient identifier list) is empty: the patient cannot be matched",
            code="101",
            segment="PID",
            field=3,
        )
    return found


def _sending_authority(message: V2Message) -> str | None:
    facility = message.msh[4]
    return system_of_authority(facility.component(1), facility.component(2), facility.component(3))


def patient_fields(message: V2Message) -> dict[str, Any]:
    """The Patient elements PID carries (identifier aside): name, birthDate, gender,
    address, telecom, maritalStatus, deceased."""
    pid = _required(message.first("PID"), "PID")
    out: dict[str, Any] = {}
    names = [n for rep in pid[5].repetitions if (n := human_name(rep)) is not None]
    if names:
        out["name"] = names
    birth = fhir_date(pid[7].value, segment="PID", field=7)
    if birth:
        out["birthDate"] = birth
    gender = _GENDER.get(pid[8].value.strip().upper())
    if gender:
        out["gender"] = gender
    addresses = [a for rep in pid[11].repetitions if (a := address(rep)) is not None]
    if addresses:
        out["address"] = addresses
    telecom = [
        t for rep in pid[13].repetitions if (t := contact_point(rep, default_use="home"))
    ] + [t for rep in pid[14].repetitions if (t := contact_point(rep, default_use="work"))]
    if telecom:
        out["telecom"] = telecom
    marital = pid[16].value.strip().upper()
    if marital in _MARITAL:
        out["maritalStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                    "code": marital,
                }
            ]
        }
    died = fhir_datetime(pid[29].value, segment="PID", field=29)
    if died:
        out["deceasedDateTime"] = died
    elif pid[30].value.strip().upper() in ("Y", "N"):
        out["deceasedBoolean"] = pid[30].value.strip().upper() == "Y"
    return out


def visit_identifier(message: V2Message) -> dict[str, Any] | None:
    """PV1-19, the visit number the Encounter is matched on (type VN)."""
    pv1 = message.first("PV1")
    if pv1 is None:
        return None
    found = identifier(pv1[19].rep(0), default_authority=_sending_authority(message))
    if found is None:
        return None
    found["type"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}]
    }
    return found


def discharge_disposition(pv1: Segment) -> dict[str, Any] | None:
    """PV1-36 as the FHIR discharge-disposition code, the sender's code kept as a second
    coding (NUBC patient status when it is a two-digit code)."""
    rep = pv1[36].rep(0)
    code = component(rep, 1).strip()
    if not code:
        return None
    display = component(rep, 2).strip()
    if code in _FHIR_DISPOSITIONS:
        return {
            "coding": [{"system": DISCHARGE, "code": code, "display": _FHIR_DISPOSITIONS[code]}]
        }
    sender: dict[str, Any] = codeable(rep) or {}
    sender_coding = dict(sender["coding"][0])
    if not component(rep, 3).strip():
        sender_coding["system"] = (
            NUBC
            if code.isdigit() and len(code) == 2
            else "http://terminology.hl7.org/CodeSystem/v2-0112"
        )
    codings: list[dict[str, Any]] = []
    mapped = _NUBC_TO_FHIR.get(code.zfill(2) if code.isdigit() else code)
    if mapped:
        codings.append({"system": DISCHARGE, "code": mapped, "display": _FHIR_DISPOSITIONS[mapped]})
    codings.append(sender_coding)
    out: dict[str, Any] = {"coding": codings}
    if display:
        out["text"] = display
    return out


def _period(pv1: Segment, offset: str | None) -> dict[str, Any]:
    period: dict[str, Any] = {}
    start = fhir_datetime(pv1[44].value, segment="PV1", field=44, default_offset=offset)
    end = fhir_datetime(pv1[45].value, segment="PV1", field=45, default_offset=offset)
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    if start and end and end < start and end[:19] < start[:19]:
        raise V2Error(
            "PV1-45 (discharge date/time) is before PV1-44 (admit date/time)",
            code="102",
            segment="PV1",
            field=45,
        )
    return period


def encounter_class(pv1: Segment) -> dict[str, Any]:
    code = pv1[2].value.strip().upper()
    if not code:
        raise V2Error("PV1-2 (patient class) is empty", code="101", segment="PV1", field=2)
    if code in _CLASS:
        system, fhir_code, display = _CLASS[code]
        return {"system": system, "code": fhir_code, "display": display}
    if code in ("R", "B", "C", "N", "U"):
        return {"system": _V2_0004, "code": code}
    raise V2Error(
        f"PV1-2 '{code}' is not a patient class of HL7 table 0004",
        code="103",
        segment="PV1",
        field=2,
    )


def message_offset(message: V2Message) -> str | None:
    """The sender's UTC offset as MSH-7 states it (+0200), for times sent without one."""
    stamp = message.msh[7].value.strip()
    if len(stamp) >= 5 and stamp[-5] in "+-" and stamp[-4:].isdigit():
        return stamp[-5:]
    return None


def encounter_fields(message: V2Message) -> dict[str, Any]:
    """The Encounter elements PV1 and PV2 carry: class, period, type, serviceType,
    hospitalization (admitSource, dischargeDisposition), reasonCode (PV2-3)."""
    pv1 = _required(message.first("PV1"), "PV1")
    out: dict[str, Any] = {"class": encounter_class(pv1)}
    period = _period(pv1, message_offset(message))
    if period:
        out["period"] = period
    kind = codeable(pv1[4].rep(0), system="http://terminology.hl7.org/CodeSystem/v2-0007")
    if kind:
        out["type"] = [kind]
    service = codeable(pv1[10].rep(0), system="http://terminology.hl7.org/CodeSystem/v2-0069")
    if service:
        out["serviceType"] = service
    hospitalization: dict[str, Any] = {}
    source = codeable(pv1[14].rep(0), system="http://terminology.hl7.org/CodeSystem/v2-0023")
    if source:
        hospitalization["admitSource"] = source
    disposition = discharge_disposition(pv1)
    if disposition:
        hospitalization["dischargeDisposition"] = disposition
    if hospitalization:
        out["hospitalization"] = hospitalization
    pv2 = message.first("PV2")
    if pv2 is not None:
        reason = codeable(pv2[3].rep(0))
        if reason:
            out["reasonCode"] = [reason]
    return out


def location(message: V2Message) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """PV1-3 (assigned patient location) as a Location, with the identifier it is matched
    on: facility, point of care, room and bed, the most granular place named."""
    pv1 = message.first("PV1")
    if pv1 is None:
        return None
    rep = pv1[3].rep(0)
    parts = [
        component(rep, 4, 1).strip(),
        component(rep, 1).strip(),
        component(rep, 2).strip(),
        component(rep, 3).strip(),
    ]
    if not any(parts[1:]):
        return None
    value = "^".join(parts)
    ident = {"system": f"{SID_BASE}/location", "value": value}
    name = " ".join(p for p in parts if p)
    resource: dict[str, Any] = {
        "resourceType": "Location",
        "identifier": [ident],
        "status": "active",
        "name": name,
        "mode": "instance",
    }
    if parts[3]:
        resource["physicalType"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                    "code": "bd",
                }
            ]
        }
    elif parts[2]:
        resource["physicalType"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                    "code": "ro",
                }
            ]
        }
    return ident, resource


def attending(message: V2Message) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """PV1-7 (attending doctor, an XCN) as a Practitioner with the identifier it is
    matched on."""
    pv1 = message.first("PV1")
    if pv1 is None:
        return None
    rep = pv1[7].rep(0)
    number = component(rep, 1).strip()
    if not number:
        return None
    system = system_of_authority(
        component(rep, 9, 1), component(rep, 9, 2), component(rep, 9, 3)
    ) or _sending_authority(message)
    ident: dict[str, Any] = {"value": number}
    if system:
        ident = {"system": system, "value": number}
    resource: dict[str, Any] = {"resourceType": "Practitioner", "identifier": [ident]}
    name = human_name(rep, family_at=2)
    if name:
        resource["name"] = [name]
    return ident, resource


def related_person(segment: Segment, patient: str) -> dict[str, Any] | None:
    """NK1 as a RelatedPerson of `patient`."""
    out: dict[str, Any] = {"resourceType": "RelatedPerson", "patient": {"reference": patient}}
    names = [n for rep in segment[2].repetitions if (n := human_name(rep)) is not None]
    if names:
        out["name"] = names
    relationship = codeable(
        segment[3].rep(0), system="http://terminology.hl7.org/CodeSystem/v2-0063"
    )
    if relationship:
        out["relationship"] = [relationship]
    addresses = [a for rep in segment[4].repetitions if (a := address(rep)) is not None]
    if addresses:
        out["address"] = addresses
    telecom = [
        t for rep in segment[5].repetitions if (t := contact_point(rep, default_use="home"))
    ] + [t for rep in segment[6].repetitions if (t := contact_point(rep, default_use="work"))]
    if telecom:
        out["telecom"] = telecom
    if len(out) == 2:
        return None
    return out


def condition(segment: Segment, patient: str, encounter: str | None) -> dict[str, Any] | None:
    """DG1 as an encounter-diagnosis Condition."""
    code = codeable(segment[3].rep(0))
    if code is None:
        description = segment[4].value.strip()
        if not description:
            return None
        code = {"text": description}
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "encounter-diagnosis",
                    }
                ]
            }
        ],
        "code": code,
        "subject": {"reference": patient},
    }
    if encounter:
        out["encounter"] = {"reference": encounter}
    onset = fhir_datetime(segment[5].value, segment="DG1", field=5, sequence=segment.sequence)
    if onset:
        out["onsetDateTime"] = onset
    return out


def coverage(segment: Segment, patient: str) -> dict[str, Any] | None:
    """IN1 as a Coverage of `patient`: payor IN1-3/IN1-4, plan IN1-2, policy number IN1-36,
    group IN1-8, period IN1-12/13."""
    company = segment[4].value.strip()
    company_id = segment[3].value.strip()
    plan = segment[2].value.strip()
    if not (company or company_id or plan):
        return None
    payor: dict[str, Any] = {}
    if company_id:
        payor["identifier"] = {"system": f"{SID_BASE}/payor", "value": company_id}
    payor["display"] = company or plan or company_id
    out: dict[str, Any] = {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": {"reference": patient},
        "payor": [payor],
    }
    policy = segment[36].value.strip()
    if policy:
        out["identifier"] = [{"system": f"{SID_BASE}/policy", "value": policy}]
        out["subscriberId"] = policy
    classes = []
    if plan:
        classes.append(_coverage_class("plan", plan, segment[2].component(2)))
    group = segment[8].value.strip()
    if group:
        classes.append(_coverage_class("group", group, segment[9].value))
    if classes:
        out["class"] = classes
    period: dict[str, Any] = {}
    for number, key in ((12, "start"), (13, "end")):
        value = fhir_date(
            segment[number].value, segment="IN1", field=number, sequence=segment.sequence
        )
        if value:
            period[key] = value
    if period:
        out["period"] = period
    return out


def _coverage_class(kind: str, value: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": kind}
            ]
        },
        "value": value,
    }
    if name.strip():
        out["name"] = name.strip()
    return out
