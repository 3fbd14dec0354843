"""The reports' configuration (profiles/reports.json): what counts as enrolled, a qualifying
contact, a current assessment; the contact requirement per acuity tier; the billing codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ReportConfig", "load_report_config"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Coding(_Model):
    system: str
    code: str


class Sourced(_Model):
    source: str = ""
    verified: bool = False


class Timezone(Sourced):
    value: str


class Contact(Sourced):
    medium_system: str
    qualifying: tuple[str, ...]
    in_person: tuple[str, ...]


class Questionnaire(Sourced):
    questionnaire: str
    current_days: int = 365


class CarePlan(Sourced):
    current_days: int


class Discharge(_Model):
    encounter_classes: tuple[str, ...]
    class_system: str


class Experience(Sourced):
    questionnaire: str
    smallest_group: int


class Billing(Sourced):
    hcpcs: str
    modifiers: tuple[str, ...]
    waiver_modifiers: tuple[str, ...]
    waiver_program: Coding


class ReportConfig(_Model):
    version: str
    timezone: Timezone
    program: Coding
    acuity_tier_extension: str
    enrolled_statuses: tuple[str, ...]
    contact: Contact
    contacts_per_month: dict[str, Any]
    assessment: Questionnaire
    care_plan: CarePlan
    discharge: Discharge
    experience: Experience
    exclusion_reason_extension: str
    billing: Billing

    def required_contacts(self) -> dict[str, int]:
        """Qualifying contacts a month by acuity tier ('unknown' when none is recorded)."""
        return {k: v for k, v in self.contacts_per_month.items() if isinstance(v, int)}


def _codes(media: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(m["code"] for m in media)


def _from_care_gaps(gaps: dict[str, Any]) -> dict[str, Any]:
    """The thresholds the reports share with the gap rules (profiles/care-gaps.json)."""
    contact = gaps["qualifyingContact"]
    rules = gaps["rules"]
    required = {
        ("unknown" if r["acuityTier"] == "any" else r["acuityTier"]): r["threshold"]
        for r in rules["contact-requirement"]["requirements"]
        if r["metric"] == "qualifying-contacts" and r["window"] == {"calendar": "month"}
    }
    assessment = rules["assessment-overdue"]
    care_plan = rules["care-plan-overdue"]
    return {
        "timezone": {"value": gaps["timeZone"], "verified": True},
        "contact": {
            "medium_system": contact["media"][0]["system"],
            "qualifying": _codes(contact["media"]),
            "in_person": _codes(contact["inPersonMedia"]),
            "source": contact.get("source", ""),
        },
        "contacts_per_month": required,
        "assessment": {
            "questionnaire": assessment["questionnaires"][0],
            "current_days": assessment["every"]["window"]["days"],
            "source": assessment["every"]["source"],
        },
        "care_plan": {
            "current_days": care_plan["every"]["window"]["days"],
            "source": care_plan["every"]["source"],
        },
    }


def load_report_config(profiles_dir: Path) -> ReportConfig:
    path = profiles_dir / "reports.json"
    try:
        own = json.loads(path.read_text(encoding="utf-8"))
        gaps = json.loads((profiles_dir / "care-gaps.json").read_text(encoding="utf-8"))
        return ReportConfig.model_validate({**own, **_from_care_gaps(gaps)})
    except (OSError, ValueError, KeyError, IndexError, ValidationError) as error:
        raise ValueError(f"{path} is not a usable report configuration: {error}") from error
