"""HL7 v2 data types to FHIR data types, the way the HL7 v2-to-FHIR IG's datatype maps do
(https://build.fhir.org/ig/HL7/v2-to-fhir/datatype_maps.html): DTM, CX, XPN, XAD, XTN, CWE,
XCN, PL. Each returns None (or []) when the v2 value is empty."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from cmfhir.exchange.hl7v2.message import Field, Repetition, V2Error, component

__all__ = [
    "SID_BASE",
    "address",
    "codeable",
    "contact_point",
    "fhir_date",
    "fhir_datetime",
    "human_name",
    "identifier",
    "system_of_authority",
]

# Identifier systems for v2 assigning authorities known only by a local namespace.
SID_BASE = "https://cmfhir.org/fhir/sid/hl7v2"

_DTM = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)

# Coding systems named in CWE-3 (HL7 table 0396) that have a FHIR URI.
_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "I10": "http://hl7.org/fhir/sid/icd-10-cm",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "C4": "http://www.ama-assn.org/go/cpt",
}


def _where(segment: str, field: int, sequence: int = 1) -> dict[str, Any]:
    return {"segment": segment, "field": field, "sequence": sequence}


def fhir_datetime(
    value: str, *, segment: str, field: int, sequence: int = 1, default_offset: str | None = None
) -> str | None:
    """A v2 DTM as a FHIR dateTime at the precision sent (a time gets seconds and an offset:
    the sender's, else `default_offset`, else UTC). A malformed or impossible value is the
    sender's data type error (AE, 102)."""
    value = value.strip()
    if not value:
        return None
    match = _DTM.match(value)
    if match is None:
        raise V2Error(
            f"{segment}-{field} '{value}' is not an HL7 date/time (YYYY[MM[DD[HHMM[SS]]]][+ZZZZ])",
            code="102",
            **_where(segment, field, sequence),
        )
    parts = match.groupdict()
    try:
        year = int(parts["y"])
        month = int(parts["mo"] or 1)
        day = int(parts["d"] or 1)
        date(year, month, day)
        if parts["h"] is not None:
            hour, minute = int(parts["h"]), int(parts["mi"] or 0)
            second = int(parts["s"] or 0)
            tz = parts["tz"] or default_offset or "+0000"
            sign = 1 if tz[0] == "+" else -1
            offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
            if offset >= timedelta(hours=24):
                raise ValueError(tz)
            moment = datetime(
                year, month, day, hour, minute, second, tzinfo=timezone(sign * offset)
            )
    except ValueError:
        raise V2Error(
            f"{segment}-{field} '{value}' is not a valid date/time",
            code="102",
            **_where(segment, field, sequence),
        ) from None
    if parts["mo"] is None:
        return f"{year:04d}"
    if parts["d"] is None:
        return f"{year:04d}-{month:02d}"
    if parts["h"] is None:
        return f"{year:04d}-{month:02d}-{day:02d}"
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if parts["f"]:
        text += "." + parts["f"]
    tz = moment.strftime("%z")
    return text + ("Z" if tz == "+0000" and not parts["tz"] else f"{tz[:3]}:{tz[3:]}")


def fhir_date(value: str, *, segment: str, field: int, sequence: int = 1) -> str | None:
    """A v2 DT or DTM as a FHIR date (the date part, as the sender wrote it)."""
    converted = fhir_datetime(value, segment=segment, field=field, sequence=sequence)
    return None if converted is None else converted[:10]


def system_of_authority(namespace: str, universal: str, kind: str) -> str | None:
    """The URI of a v2 assigning authority (HD): an ISO OID or UUID as urn:oid/urn:uuid,
    otherwise its namespace under cmfhir's own identifier base."""
    if universal and kind.upper() == "ISO" and re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+", universal):
        return f"urn:oid:{universal}"
    if universal and kind.upper() == "UUID":
        return f"urn:uuid:{universal.lower()}"
    if universal and kind.upper() in ("URI", "URL") and ":" in universal:
        return universal
    name = namespace or universal
    if name:
        return f"{SID_BASE}/{quote(name.strip(), safe='')}"
    return None


def identifier(rep: Repetition, *, default_authority: str | None = None) -> dict[str, Any] | None:
    """A CX as an Identifier: CX-1 the value, CX-4 the assigning authority (the system), CX-5
    the identifier type (v2 table 0203)."""
    value = component(rep, 1).strip()
    if not value:
        return None
    kind = component(rep, 5).strip()
    system = system_of_authority(component(rep, 4, 1), component(rep, 4, 2), component(rep, 4, 3))
    if kind == "SS" or component(rep, 4, 1) == "USSSA":
        system = "http://hl7.org/fhir/sid/us-ssn"
    out: dict[str, Any] = {}
    if system is None and default_authority:
        system = default_authority
    if system:
        out["system"] = system
    out["value"] = value
    if kind:
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": kind}]
        }
    return out


_NAME_USE = {
    "L": "official",
    "D": "usual",
    "M": "maiden",
    "N": "nickname",
    "A": "anonymous",
    "S": "anonymous",
    "B": "official",
    "C": "official",
}


def human_name(rep: Repetition, *, family_at: int = 1) -> dict[str, Any] | None:
    """An XPN (or the name part of an XCN, which starts one component later) as a
    HumanName."""
    family = component(rep, family_at, 1).strip()
    given = [g for g in (component(rep, family_at + 1), component(rep, family_at + 2)) if g.strip()]
    out: dict[str, Any] = {}
    if family:
        out["family"] = family
    if given:
        out["given"] = [g.strip() for g in given]
    suffix = [s for s in (component(rep, family_at + 3),) if s.strip()]
    if suffix:
        out["suffix"] = suffix
    prefix = component(rep, family_at + 4).strip()
    if prefix:
        out["prefix"] = [prefix]
    if not out:
        return None
    use = _NAME_USE.get(component(rep, family_at + 6).strip())
    if use:
        out["use"] = use
    return out


_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "BI": "billing"}


def address(rep: Repetition) -> dict[str, Any] | None:
    """An XAD as an Address."""
    street = " ".join(s.strip() for s in (rep[0] if rep else []) if s.strip())
    line = [x.strip() for x in (street, component(rep, 2)) if x.strip()]
    out: dict[str, Any] = {}
    if line:
        out["line"] = line
    for number, key in ((3, "city"), (4, "state"), (5, "postalCode"), (6, "country")):
        value = component(rep, number).strip()
        if value:
            out[key] = value
    if not out:
        return None
    kind = component(rep, 7).strip()
    if kind in _ADDRESS_USE:
        if kind == "BI":
            out["use"] = "billing"
        else:
            out["use"] = _ADDRESS_USE[kind]
    elif kind == "M":
        out["type"] = "postal"
    return out


_TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "VHN": "temp", "EMR": "home"}
_TELECOM_SYSTEM = {"PH": "phone", "FX": "fax", "CP": "phone", "BP": "pager", "Internet": "email"}


def contact_point(rep: Repetition, *, default_use: str | None = None) -> dict[str, Any] | None:
    """An XTN as a ContactPoint: the email (XTN-4), the structured number (XTN-5..8), or the
    unformatted XTN-1."""
    equipment = component(rep, 3).strip()
    if equipment == "Internet" or component(rep, 2).strip() == "NET":
        value = component(rep, 4).strip() or component(rep, 1).strip()
        system = "email"
    else:
        local = component(rep, 7).strip()
        area = component(rep, 6).strip()
        value = component(rep, 1).strip() or (f"({area}) {local}" if area and local else local)
        system = _TELECOM_SYSTEM.get(equipment, "phone")
    if not value:
        return None
    out: dict[str, Any] = {"system": system, "value": value}
    use = (
        "mobile" if equipment == "CP" else _TELECOM_USE.get(component(rep, 2).strip(), default_use)
    )
    if use:
        out["use"] = use
    return out


def coding_system(name: str) -> str | None:
    name = name.strip()
    if not name:
        return None
    if name in _SYSTEMS:
        return _SYSTEMS[name]
    table = re.fullmatch(r"HL7(\d{4})", name, flags=re.IGNORECASE)
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    return f"{SID_BASE}/codesystem/{quote(name, safe='')}"


def codeable(rep: Repetition, *, system: str | None = None) -> dict[str, Any] | None:
    """A CWE/CE (or an IS/ID code with the system of its table) as a CodeableConcept."""
    code = component(rep, 1).strip()
    display = component(rep, 2).strip()
    if not code and not display:
        return None
    out: dict[str, Any] = {}
    if code:
        coding: dict[str, Any] = {}
        chosen = system or coding_system(component(rep, 3))
        if chosen:
            coding["system"] = chosen
        coding["code"] = code
        if display:
            coding["display"] = display
        out["coding"] = [coding]
    if display:
        out["text"] = display
    return out


def first(field: Field) -> Repetition:
    return field.rep(0)
