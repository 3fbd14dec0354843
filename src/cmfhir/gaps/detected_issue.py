"""The DetectedIssue a care gap is written as: the Da Vinci DEQM 5.0.0 gaps-in-care shape
(https://hl7.org/fhir/us/davinci-deqm/STU5/StructureDefinition-gaps-detectedissue-deqm.html):
status final; code v3-ActCode CAREGAP plus the rule's code; the gapStatus modifier
extension; evidence.detail pointing at the resources that caused it; a sentence in
`detail`; a stable identifier; a mitigation when closed. Plus the member's care manager at
the time (extension care-manager, searchable as `care-manager`)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from cmfhir.gaps.model import Gap, GapStatus

__all__ = [
    "CARE_GAP_ID",
    "CARE_GAP_SYSTEM",
    "CARE_MANAGER_URL",
    "ENGINE_MITIGATION",
    "GAP_STATUS_SYSTEM",
    "GAP_STATUS_URL",
    "acknowledged",
    "build",
    "care_manager_of",
    "closed_text",
    "engine_mitigation",
    "gap_identifier",
    "gap_status",
    "issue_id",
    "rule_of",
    "set_status",
]

CARE_GAP_SYSTEM = "https://cmfhir.org/fhir/CodeSystem/care-gap"
CARE_GAP_ID = "https://cmfhir.org/fhir/care-gap-id"
CARE_MANAGER_URL = "https://cmfhir.org/fhir/StructureDefinition/care-manager"
GAP_STATUS_URL = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
GAP_STATUS_SYSTEM = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# The mitigation the engine writes when the data closes a gap; any other mitigation is a
# person's (a care manager acknowledging the gap), and keeps the gap closed.
ENGINE_MITIGATION = "https://cmfhir.org/fhir/CodeSystem/care-gap-mitigation"
_NAMESPACE = uuid.UUID("6f1c3b1e-4a8e-5d2b-9f63-0c1d2e3f4a5b")
_STATUS_DISPLAY = {
    "open-gap": "Open Gap",
    "prospective-gap": "Prospective Gap",
    "closed-gap": "Closed Gap",
}


def issue_id(identifier: str) -> str:
    """The DetectedIssue id of a gap: derived from its identifier, so a gap written twice
    (a replay, two workers) is one resource."""
    return str(uuid.uuid5(_NAMESPACE, identifier))


def _instant(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _status_extension(status: GapStatus) -> dict[str, Any]:
    coding = {"system": GAP_STATUS_SYSTEM, "code": status, "display": _STATUS_DISPLAY[status]}
    return {"url": GAP_STATUS_URL, "valueCodeableConcept": {"coding": [coding]}}


def engine_mitigation(text: str, when: datetime) -> dict[str, Any]:
    coding = {"system": ENGINE_MITIGATION, "code": "resolved", "display": "Resolved"}
    return {"action": {"coding": [coding], "text": text}, "date": _instant(when)}


def build(
    patient_id: str,
    gap: Gap,
    *,
    identified: datetime,
    care_manager: str | None,
    closed_at: datetime | None = None,
    resource_id: str | None = None,
) -> dict[str, Any]:
    """The DetectedIssue of `gap` (open, prospective, or closed at `closed_at`), with the id
    derived from its identifier unless given (that of the stored one)."""
    identifier = gap.identifier(patient_id)
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": resource_id or issue_id(identifier),
        "modifierExtension": [_status_extension(gap.status)],
    }
    if care_manager is not None:
        resource["extension"] = [
            {"url": CARE_MANAGER_URL, "valueReference": {"reference": care_manager}}
        ]
    resource.update(
        {
            "identifier": [{"system": CARE_GAP_ID, "value": identifier}],
            "status": "final",
            "code": {
                "coding": [
                    {"system": ACT_CODE, "code": "CAREGAP", "display": "Care Gaps"},
                    {"system": CARE_GAP_SYSTEM, "code": gap.rule},
                ]
            },
            "patient": {"reference": f"Patient/{patient_id}"},
            "identifiedDateTime": _instant(identified),
        }
    )
    if gap.evidence:
        resource["evidence"] = [{"detail": [{"reference": ref} for ref in gap.evidence]}]
    resource["detail"] = gap.detail
    if gap.status == "closed-gap":
        when = closed_at or identified
        resource["mitigation"] = [engine_mitigation(gap.mitigation or _closed_text(when), when)]
    return resource


def _closed_text(when: datetime | date) -> str:
    day = when.date() if isinstance(when, datetime) else when
    return f"Closed on {day.day} {day:%b %Y}: the member's record no longer shows this gap."


def closed_text(when: datetime) -> str:
    return _closed_text(when)


def gap_identifier(resource: dict[str, Any]) -> str | None:
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") == CARE_GAP_ID and isinstance(identifier.get("value"), str):
            value: str = identifier["value"]
            return value
    return None


def rule_of(resource: dict[str, Any]) -> str | None:
    for coding in (resource.get("code") or {}).get("coding") or ():
        if coding.get("system") == CARE_GAP_SYSTEM:
            code: str | None = coding.get("code")
            return code
    return None


def gap_status(resource: dict[str, Any]) -> str | None:
    for extension in resource.get("modifierExtension") or ():
        if extension.get("url") == GAP_STATUS_URL:
            for coding in (extension.get("valueCodeableConcept") or {}).get("coding") or ():
                if coding.get("system") == GAP_STATUS_SYSTEM:
                    code: str | None = coding.get("code")
                    return code
    return None


def set_status(resource: dict[str, Any], status: GapStatus) -> None:
    others = [e for e in resource.get("modifierExtension") or () if e.get("url") != GAP_STATUS_URL]
    resource["modifierExtension"] = [_status_extension(status), *others]


def acknowledged(resource: dict[str, Any]) -> bool:
    """Whether someone other than the engine added a mitigation (acknowledged the gap)."""
    for mitigation in resource.get("mitigation") or ():
        codings = (mitigation.get("action") or {}).get("coding") or ()
        if not any(c.get("system") == ENGINE_MITIGATION for c in codings):
            return True
    return False


def care_manager_of(resource: dict[str, Any]) -> str | None:
    for extension in resource.get("extension") or ():
        if extension.get("url") == CARE_MANAGER_URL:
            ref: str | None = (extension.get("valueReference") or {}).get("reference")
            return ref
    return None
