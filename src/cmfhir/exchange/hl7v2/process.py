"""Receiving one ADT message: checked, matched against what is stored, mapped, and written
as ONE FHIR transaction through the transaction interaction (so the gap engine sees a
discharge at once), then acknowledged.

Idempotent on the message: its Provenance has an id derived from the sender and MSH-10, so
the same message again is found and changes nothing. Updates of stored resources carry
their version (If-Match): a concurrent change makes the transaction fail and the message is
matched and mapped again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from cmfhir.errors import Conflict, FhirError, PreconditionFailed
from cmfhir.exchange.hl7v2.ack import build_ack, fallback_ack
from cmfhir.exchange.hl7v2.datatypes import SID_BASE, fhir_datetime, identifier
from cmfhir.exchange.hl7v2.events import EVENTS, Event
from cmfhir.exchange.hl7v2.lookup import Found, find, token
from cmfhir.exchange.hl7v2.mapping import (
    attending,
    condition,
    coverage,
    encounter_fields,
    location,
    message_offset,
    patient_fields,
    patient_identifiers,
    related_person,
    visit_identifier,
)
from cmfhir.exchange.hl7v2.message import SUPPORTED_VERSIONS, V2Error, V2Message, parse_message
from cmfhir.interactions import process_bundle
from cmfhir.interactions.context import FhirContext, instant, utcnow

__all__ = ["Ack", "receive"]

log = logging.getLogger(__name__)
_ATTEMPTS = 3
MESSAGE_SID = f"{SID_BASE}/message"


@dataclass(frozen=True, slots=True)
class Ack:
    """The acknowledgment (ER7 text) and its code: AA, AE or AR."""

    code: str
    text: str
    duplicate: bool = False
    # What an HTTP client is answered with: 200 for AA, 400 for a refused message (AR),
    # 422 for content in error (AE), the store's own status when it could not write.
    status: int = 200


def _provenance_id(message: V2Message) -> str:
    msh = message.msh
    key = "|".join([msh[3].component(1), msh[4].component(1), message.control_id])
    return "hl7v2-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _check_header(message: V2Message) -> Event:
    kind, trigger = message.message_type
    if not message.control_id.strip():
        raise V2Error("MSH-10 (message control id) is empty", code="101", segment="MSH", field=10)
    version = message.version.strip()
    if version not in SUPPORTED_VERSIONS:
        raise V2Error(
            f"MSH-12 version '{version}' is not supported (2.3 to 2.8 are)",
            ack="AR",
            code="203",
            segment="MSH",
            field=12,
        )
    if kind != "ADT":
        raise V2Error(
            f"MSH-9 message type '{kind}' is not supported (ADT is)",
            ack="AR",
            code="200",
            segment="MSH",
            field=9,
        )
    event = EVENTS.get(trigger)
    if event is None:
        raise V2Error(
            f"MSH-9 trigger event '{trigger}' is not supported ({', '.join(sorted(EVENTS))} are)",
            ack="AR",
            code="201",
            segment="MSH",
            field=9,
        )
    if message.first("PID") is None:
        raise V2Error("The message has no PID segment", code="100", segment="PID")
    if message.first("PV1") is None and not event.pv1_optional:
        raise V2Error(f"An {trigger} message needs a PV1 segment", code="100", segment="PV1")
    return event


def _strip_meta(resource: Found) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", "text")}
    return out


def _version(resource: Found) -> str:
    return f'W/"{resource["meta"]["versionId"]}"'


def _same(a: Found, b: dict[str, Any]) -> bool:
    return _strip_meta(a) == _strip_meta(b)


def _ident_key(ident: dict[str, Any]) -> tuple[str, str]:
    return (str(ident.get("system", "")), str(ident.get("value", "")))


def _union_identifiers(
    existing: list[dict[str, Any]], added: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = list(existing)
    seen = {_ident_key(i) for i in existing}
    for ident in added:
        if _ident_key(ident) not in seen:
            out.append(ident)
            seen.add(_ident_key(ident))
    return out


def _replaced(patient: Found) -> bool:
    return any(link.get("type") == "replaced-by" for link in patient.get("link", []))


def _repoint(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (
                key == "reference"
                and isinstance(item, str)
                and (item == old or item.endswith("/" + old))
            ):
                out[key] = new
            else:
                out[key] = _repoint(item, old, new)
        return out
    if isinstance(value, list):
        return [_repoint(item, old, new) for item in value]
    return value


@dataclass
class _Plan:
    """The transaction being built for one message."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    changed: bool = False

    def create(self, resource: dict[str, Any], *, if_none_exist: str | None = None) -> str:
        full_url = f"urn:uuid:{uuid.uuid4()}"
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if if_none_exist:
            request["ifNoneExist"] = if_none_exist
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        self.targets.append(full_url)
        self.changed = True
        return full_url

    def update(self, stored: Found, resource: dict[str, Any]) -> str:
        reference = f"{stored['resourceType']}/{stored['id']}"
        if not _same(stored, resource):
            body = {k: v for k, v in resource.items() if k not in ("meta",)}
            self.entries.append(
                {
                    "fullUrl": reference,
                    "resource": body,
                    "request": {"method": "PUT", "url": reference, "ifMatch": _version(stored)},
                }
            )
            self.changed = True
        self.targets.append(reference)
        return reference


# Identifiers a patient is never matched on: shared or reused across people and systems.
_NOT_KEYS = {"SS", "SB", "DL", "PPN"}


def match_keys(idents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The identifiers of PID-3 a patient is matched on: all but SSNs, driver's licences and
    passports (kept on the Patient, never used to match), unless there is nothing else."""
    keys = [
        i
        for i in idents
        if not {c.get("code") for c in i.get("type", {}).get("coding", [])} & _NOT_KEYS
        and i.get("system") != "http://hl7.org/fhir/sid/us-ssn"
    ]
    return keys or idents


async def _find_patient(
    ctx: FhirContext, idents: list[dict[str, Any]], base: str, *, where: str
) -> Found | None:
    values = ",".join(token(i) for i in match_keys(idents))
    found = [p for p in await find(ctx, "Patient", [("identifier", values)], base=base)]
    current = [p for p in found if not _replaced(p)] or found
    if len(current) > 1:
        raise V2Error(
            f"{where} matches {len(current)} patients; it must name one",
            code="205",
            segment=where.split("-")[0],
            field=int(where.split("-")[1]),
        )
    return current[0] if current else None


def _conditional(idents: list[dict[str, Any]]) -> str:
    from urllib.parse import quote

    return "identifier=" + quote(",".join(token(i) for i in match_keys(idents)), safe="")


def _status(event: Event, fields: dict[str, Any], stored: Found | None) -> str | None:
    """The event's status (Event[EncounterStatus]); a discharge time makes it finished,
    except for the cancel events and A08, which does not convey a status."""
    if event.code in ("A11", "A12", "A13"):
        return event.status
    if fields.get("period", {}).get("end") and event.code != "A08":
        return "finished"
    if event.status is None:
        return None if stored is None else str(stored.get("status"))
    return event.status


def _encounter(
    message: V2Message,
    event: Event,
    stored: Found | None,
    patient: str,
    visit: dict[str, Any] | None,
    location_ref: str | None,
    practitioner_ref: str | None,
) -> dict[str, Any]:
    fields = encounter_fields(message) if message.first("PV1") is not None else {}
    out: dict[str, Any] = (
        copy.deepcopy(stored) if stored is not None else {"resourceType": "Encounter"}
    )
    if visit is not None:
        out["identifier"] = _union_identifiers(out.get("identifier", []), [visit])
    status = _status(event, fields, stored)
    if status:
        out["status"] = status
    for key in ("class", "type", "serviceType", "reasonCode"):
        if key in fields:
            out[key] = fields[key]
    period = dict(out.get("period", {}))
    period.update(fields.get("period", {}))
    hospitalization = dict(out.get("hospitalization", {}))
    hospitalization.update(fields.get("hospitalization", {}))
    if event.code == "A13":
        period.pop("end", None)
        hospitalization.pop("dischargeDisposition", None)
    if period:
        out["period"] = period
    else:
        out.pop("period", None)
    if hospitalization:
        out["hospitalization"] = hospitalization
    else:
        out.pop("hospitalization", None)
    out["subject"] = {"reference": patient}
    if practitioner_ref is not None:
        participants = [
            p
            for p in out.get("participant", [])
            if not any(
                c.get("code") == "ATND" for t in p.get("type", []) for c in t.get("coding", [])
            )
        ]
        participants.append(
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                                "display": "attender",
                            }
                        ]
                    }
                ],
                "individual": {"reference": practitioner_ref},
            }
        )
        out["participant"] = participants
    if location_ref is not None:
        places = [dict(p) for p in out.get("location", [])]
        if not any(p.get("location", {}).get("reference") == location_ref for p in places):
            for place in places:
                if place.get("status") in ("active", "planned"):
                    place["status"] = "completed"
            planned = out.get("class", {}).get("code") == "PRENC"
            places.append(
                {
                    "location": {"reference": location_ref},
                    "status": "planned" if planned else "active",
                }
            )
        out["location"] = places
    if "class" not in out:
        raise V2Error("PV1-2 (patient class) is empty", code="101", segment="PV1", field=2)
    return out


def _key(resource: dict[str, Any], kind: str) -> str:
    """What makes two NK1s, DG1s or IN1s of one patient the same resource."""
    if kind == "RelatedPerson":
        names = [(n.get("family"), tuple(n.get("given", []))) for n in resource.get("name", [])]
        rel = [c.get("code") for r in resource.get("relationship", []) for c in r.get("coding", [])]
        return _canonical((names[:1], rel[:1]))
    if kind == "Condition":
        codes = [
            (c.get("system"), c.get("code")) for c in resource.get("code", {}).get("coding", [])
        ]
        return _canonical(
            (codes[:1] or resource.get("code", {}).get("text"), resource.get("encounter"))
        )
    payor = [
        (p.get("identifier", {}).get("value"), p.get("display")) for p in resource.get("payor", [])
    ]
    return _canonical((payor[:1], resource.get("subscriberId"), resource.get("class")))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


async def _children(
    ctx: FhirContext,
    plan: _Plan,
    wanted: list[dict[str, Any]],
    kind: str,
    param: str,
    patient_id: str | None,
    base: str,
) -> None:
    """Create the NK1/DG1/IN1 resources the patient does not have yet."""
    if not wanted:
        return
    stored: list[Found] = []
    if patient_id is not None:
        stored = await find(ctx, kind, [(param, f"Patient/{patient_id}")], base=base)
    known = {_key(_strip_meta(s), kind): s for s in stored}
    for resource in wanted:
        match = known.get(_key(resource, kind))
        if match is None:
            plan.create(resource)
            known[_key(resource, kind)] = resource
        else:
            plan.targets.append(f"{kind}/{match['id']}")


async def _plan(ctx: FhirContext, message: V2Message, event: Event, base: str) -> _Plan:
    plan = _Plan()
    idents = patient_identifiers(message)
    demographics = patient_fields(message)
    stored_patient = await _find_patient(ctx, idents, base, where="PID-3")
    prior: Found | None = None
    if event.code == "A40":
        prior = await _merged_patient(ctx, message, base)
        if stored_patient is None:
            raise V2Error(
                "A40: the surviving patient (PID-3) is not known here",
                code="204",
                segment="PID",
                field=3,
            )
        if prior["id"] == stored_patient["id"]:
            raise V2Error(
                "A40: MRG-1 names the same patient as PID-3", code="205", segment="MRG", field=1
            )
    if stored_patient is None:
        if not event.creates:
            raise V2Error(
                f"{event.code} updates a patient, and no patient with PID-3 is known here",
                code="204",
                segment="PID",
                field=3,
            )
        patient = {"resourceType": "Patient", "identifier": idents, **demographics}
        patient_ref = plan.create(patient, if_none_exist=_conditional(idents))
        patient_id = None
    else:
        patient = copy.deepcopy(stored_patient)
        patient.update(demographics)
        patient["identifier"] = _union_identifiers(stored_patient.get("identifier", []), idents)
        if prior is not None:
            patient["identifier"] = _union_identifiers(
                patient["identifier"], prior.get("identifier", [])
            )
            links = [
                lk
                for lk in patient.get("link", [])
                if lk.get("other", {}).get("reference") != f"Patient/{prior['id']}"
            ]
            links.append({"other": {"reference": f"Patient/{prior['id']}"}, "type": "replaces"})
            patient["link"] = links
        patient_ref = plan.update(stored_patient, patient)
        patient_id = str(stored_patient["id"])
    if prior is not None:
        await _merge(ctx, plan, prior, patient_ref, base)
    encounter_ref = await _plan_encounter(ctx, plan, message, event, patient_ref, base)
    if event.creates or event.code == "A08":
        await _children(
            ctx,
            plan,
            [r for s in message.all("NK1") if (r := related_person(s, patient_ref))],
            "RelatedPerson",
            "patient",
            patient_id,
            base,
        )
        await _children(
            ctx,
            plan,
            [r for s in message.all("DG1") if (r := condition(s, patient_ref, encounter_ref))],
            "Condition",
            "patient",
            patient_id,
            base,
        )
        await _children(
            ctx,
            plan,
            [r for s in message.all("IN1") if (r := coverage(s, patient_ref))],
            "Coverage",
            "beneficiary",
            patient_id,
            base,
        )
    return plan


async def _merged_patient(ctx: FhirContext, message: V2Message, base: str) -> Found:
    mrg = message.first("MRG")
    if mrg is None:
        raise V2Error("An A40 message needs an MRG segment", code="100", segment="MRG")
    idents = [i for rep in mrg[1].repetitions if (i := identifier(rep)) is not None]
    if not idents:
        raise V2Error(
            "MRG-1 (prior patient identifier list) is empty", code="101", segment="MRG", field=1
        )
    found = await _find_patient(ctx, idents, base, where="MRG-1")
    if found is None:
        # Identifiers sent without an authority may have been stored with the sender's.
        authority = [
            i
            for rep in mrg[1].repetitions
            if (i := identifier(rep, default_authority=_sender_system(message))) is not None
        ]
        found = await _find_patient(ctx, authority, base, where="MRG-1")
    if found is None:
        raise V2Error(
            "A40: the patient to merge (MRG-1) is not known here",
            code="204",
            segment="MRG",
            field=1,
        )
    return found


def _sender_system(message: V2Message) -> str | None:
    from cmfhir.exchange.hl7v2.datatypes import system_of_authority

    facility = message.msh[4]
    return system_of_authority(facility.component(1), facility.component(2), facility.component(3))


async def _merge(ctx: FhirContext, plan: _Plan, prior: Found, survivor: str, base: str) -> None:
    """A40: the merged patient is marked replaced-by the survivor and made inactive; what
    refers to it is repointed to the survivor (Provenance records are left as written)."""
    old = f"Patient/{prior['id']}"
    merged = copy.deepcopy(prior)
    merged["active"] = False
    merged["link"] = [
        *[lk for lk in prior.get("link", []) if lk.get("type") != "replaced-by"],
        {"other": {"reference": survivor}, "type": "replaced-by"},
    ]
    plan.update(prior, merged)
    for resource_type, param in _REFERRING:
        for stored in await find(ctx, resource_type, [(param, old)], base=base):
            if resource_type == "Patient" and stored["id"] == prior["id"]:
                continue
            repointed = _repoint(stored, old, survivor)
            if repointed != stored:
                plan.update(stored, repointed)


# The resources of a member's record an ADT feed and a care-management server hold, and the
# parameter that names the patient in each (the Patient CompartmentDefinition's).
_REFERRING = (
    ("Encounter", "patient"),
    ("Condition", "patient"),
    ("Coverage", "beneficiary"),
    ("RelatedPerson", "patient"),
    ("Observation", "patient"),
    ("Procedure", "patient"),
    ("AllergyIntolerance", "patient"),
    ("MedicationRequest", "patient"),
    ("MedicationDispense", "patient"),
    ("MedicationStatement", "patient"),
    ("Immunization", "patient"),
    ("DiagnosticReport", "patient"),
    ("CarePlan", "patient"),
    ("CareTeam", "patient"),
    ("Goal", "patient"),
    ("EpisodeOfCare", "patient"),
    ("Communication", "patient"),
    ("QuestionnaireResponse", "patient"),
    ("ServiceRequest", "patient"),
    ("Task", "patient"),
    ("Appointment", "patient"),
    ("DetectedIssue", "patient"),
    ("Flag", "patient"),
    ("DocumentReference", "patient"),
    ("Consent", "patient"),
    ("Claim", "patient"),
    ("ExplanationOfBenefit", "patient"),
    ("Group", "member"),
)


async def _plan_encounter(
    ctx: FhirContext,
    plan: _Plan,
    message: V2Message,
    event: Event,
    patient_ref: str,
    base: str,
) -> str | None:
    if message.first("PV1") is None or event.code == "A40":
        return None
    visit = visit_identifier(message)
    stored: Found | None = None
    if visit is not None:
        found = await find(ctx, "Encounter", [("identifier", token(visit))], base=base)
        if len(found) > 1:
            raise V2Error(
                "PV1-19 (visit number) matches more than one encounter",
                code="205",
                segment="PV1",
                field=19,
            )
        stored = found[0] if found else None
    elif event.needs_encounter:
        raise V2Error(
            f"{event.code} names the visit it changes in PV1-19, which is empty",
            code="101",
            segment="PV1",
            field=19,
        )
    if stored is None and (event.needs_encounter or not event.creates):
        if event.code == "A08":
            return None
        raise V2Error(
            f"{event.code}: no encounter with this PV1-19 visit number is known here",
            code="204",
            segment="PV1",
            field=19,
        )
    place = location(message)
    location_ref = None if place is None else await _known_or_new(ctx, plan, *place, base)
    doctor = attending(message)
    practitioner_ref = None if doctor is None else await _known_or_new(ctx, plan, *doctor, base)
    content = _encounter(message, event, stored, patient_ref, visit, location_ref, practitioner_ref)
    if stored is not None:
        return plan.update(stored, content)
    condition_ = _conditional([visit]) if visit is not None else None
    return plan.create(content, if_none_exist=condition_)


async def _known_or_new(
    ctx: FhirContext, plan: _Plan, ident: dict[str, Any], resource: dict[str, Any], base: str
) -> str:
    """A reference to the Location or Practitioner with this identifier, created (by a
    conditional create, so racing messages make one) when there is none."""
    kind = resource["resourceType"]
    found = await find(ctx, kind, [("identifier", token(ident))], base=base)
    if found:
        return f"{kind}/{found[0]['id']}"
    return plan.create(resource, if_none_exist=_conditional([ident]))


def _provenance(message: V2Message, event: Event, plan: _Plan) -> dict[str, Any]:
    msh = message.msh
    facility = msh[4].component(1) or msh[4].component(2)
    application = msh[3].component(1)
    who: dict[str, Any] = {
        "display": " at ".join(x for x in (application, facility) if x) or "HL7 v2 sender"
    }
    if facility:
        who["identifier"] = {"system": f"{SID_BASE}/facility", "value": facility}
    evn = message.first("EVN")
    occurred = None
    if evn is not None:
        occurred = fhir_datetime(
            evn[6].value or evn[2].value,
            segment="EVN",
            field=6 if evn[6].value else 2,
            default_offset=message_offset(message),
        )
    out: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": _provenance_id(message),
        "target": [{"reference": t} for t in dict.fromkeys(plan.targets)],
        "recorded": instant(utcnow()),
        "activity": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": event.code}
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": who,
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": MESSAGE_SID, "value": message.control_id},
                    "display": f"HL7 v2 ADT^{event.code} message {message.control_id}",
                },
            }
        ],
    }
    if occurred:
        out["occurredDateTime"] = occurred
    return out


async def _already_received(ctx: FhirContext, message: V2Message) -> bool:
    async with ctx.store.transaction(read_only=True, principal=ctx.principal) as repo:
        return await repo.read("Provenance", _provenance_id(message)) is not None


async def _apply(ctx: FhirContext, message: V2Message, event: Event, base: str) -> bool:
    """Write the message; False when it had been received already (nothing changes)."""
    for attempt in range(_ATTEMPTS):
        if await _already_received(ctx, message):
            return False
        plan = await _plan(ctx, message, event, base)
        provenance = _provenance(message, event, plan)
        entries = [
            *plan.entries,
            {
                "fullUrl": f"Provenance/{provenance['id']}",
                "resource": provenance,
                "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"},
            },
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        try:
            await process_bundle(ctx, bundle, base=base, representation=False)
            return True
        except (Conflict, PreconditionFailed):
            if attempt == _ATTEMPTS - 1:
                raise
            log.info("ADT message raced a concurrent change; matching it again")
    return True


async def receive(ctx: FhirContext, text: str, *, base: str) -> Ack:
    """Process one ER7 message and acknowledge it. Nothing is stored unless the ACK is AA."""
    try:
        message = parse_message(text)
    except V2Error as error:
        return Ack(error.ack, fallback_ack(error), status=400)
    try:
        event = _check_header(message)
        written = await _apply(ctx, message, event, base)
    except V2Error as error:
        status = 400 if error.ack == "AR" else 422
        return Ack(error.ack, build_ack(message, error.ack, error=error), status=status)
    except FhirError as error:
        # The mapped resources were refused (validation) or the store could not take them.
        detail = "; ".join(issue.diagnostics for issue in error.issues if issue.diagnostics)
        refused = V2Error(f"The message could not be stored: {detail or error.diagnostics}")
        status = error.status if error.status in (409, 412, 503) else 422
        return Ack("AE", build_ack(message, "AE", error=refused), status=status)
    if not written:
        note = f"Message {message.control_id} was received before; nothing changed"
        return Ack("AA", build_ack(message, "AA", text=note), duplicate=True)
    return Ack("AA", build_ack(message, "AA"))
