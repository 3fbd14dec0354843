"""The ADT trigger events cmfhir accepts and what each does to the Encounter
(HL7 v2-to-FHIR ConceptMap "Event[EncounterStatus]", docs/exchange.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EVENTS", "Event"]


@dataclass(frozen=True, slots=True)
class Event:
    code: str
    # The Encounter.status the event sets; None leaves it as it is (A08).
    status: str | None
    # The event may create the Patient and Encounter when they are unknown.
    creates: bool = True
    # The event acts on an Encounter that must already exist (cancel, reopen).
    needs_encounter: bool = False
    # PV1 is optional for the event.
    pv1_optional: bool = False


EVENTS = {
    "A01": Event("A01", "in-progress"),
    "A02": Event("A02", "in-progress"),
    "A03": Event("A03", "finished"),
    "A04": Event("A04", "planned"),
    "A05": Event("A05", "planned"),
    "A06": Event("A06", "in-progress"),
    "A07": Event("A07", "in-progress"),
    "A08": Event("A08", None, creates=False, pv1_optional=True),
    "A11": Event("A11", "cancelled", creates=False, needs_encounter=True),
    "A12": Event("A12", "in-progress", creates=False, needs_encounter=True),
    "A13": Event("A13", "in-progress", creates=False, needs_encounter=True),
    "A40": Event("A40", None, creates=False, pv1_optional=True),
}
