"""What the rules see and what they say: a member's snapshot in, gaps out.

Each rule is a module under `gaps/rules/` with `CODE` (its code in
https://cmfhir.org/fhir/CodeSystem/care-gap) and a pure function
`evaluate(snapshot, as_of, config) -> list[Gap]`. The engine (gaps/engine.py) builds the
snapshot from one database snapshot, runs every rule, and reconciles the gaps with the
member's stored DetectedIssues (one per `Gap.identifier` for the gap's whole life).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal, TypeVar

__all__ = ["Gap", "GapStatus", "MemberSnapshot"]

# http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status
GapStatus = Literal["open-gap", "prospective-gap", "closed-gap"]

Resource = Mapping[str, Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """One member's current (not deleted) resources, read in one database snapshot.

    `resources` holds, by resource type, the member's Patient compartment (EpisodeOfCare,
    Encounter, Appointment, Communication, MedicationDispense, QuestionnaireResponse,
    CarePlan, CareTeam, Condition, Procedure, ServiceRequest, Task, DetectedIssue ...) and
    the shared resources they reference that rules need (Practitioner, PractitionerRole,
    Organization, Location).
    """

    patient_id: str
    resources: Mapping[str, Sequence[Resource]]
    # What several rules derive alike from the snapshot (the member's qualifying contacts),
    # computed once per snapshot: `derived`.
    _derived: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`, computed once for this snapshot under `key` (the snapshot is read-only,
        so what is derived from it stays true; callers must not change what they get)."""
        try:
            found: T = self._derived[key]
        except KeyError:
            found = self._derived[key] = make()
        return found

    def of(self, resource_type: str) -> Sequence[Resource]:
        return self.resources.get(resource_type, ())

    def get(self, reference: str) -> Resource | None:
        """The resource a relative reference (`Encounter/12`) names, if in the snapshot."""
        resource_type, _, id = reference.partition("/")
        return next((r for r in self.of(resource_type) if r.get("id") == id), None)


@dataclass(frozen=True, slots=True)
class Gap:
    """One care gap of one member, as a rule computes it at `as_of`.

    `key` tells this gap apart from the rule's other gaps for the same member and stays the
    same for its whole life (the discharge's `Encounter/12`, the month `2026-10`, the
    therapeutic class `statins`, or `""` for a rule with one gap per member).
    """

    rule: str
    key: str
    status: GapStatus
    # A sentence a care manager understands: "Discharged from WakeMed on 3 Oct; no contact
    # since — due 10 Oct".
    detail: str
    # Relative references of the resources that caused it (DetectedIssue.evidence.detail).
    evidence: tuple[str, ...] = ()
    # When the gap began or is due (DetectedIssue.identifiedDateTime and the detail's date).
    identified: datetime | None = None
    due: date | None = None
    # For a closed gap: why and when it closed (DetectedIssue.mitigation).
    mitigation: str | None = None

    def identifier(self, patient_id: str) -> str:
        """The value of the DetectedIssue's identifier (system
        https://cmfhir.org/fhir/care-gap-id): stable across evaluations."""
        return f"{patient_id}/{self.rule}/{self.key}" if self.key else f"{patient_id}/{self.rule}"
