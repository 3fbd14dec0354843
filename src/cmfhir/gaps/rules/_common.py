"""What several rules share: FHIR dates in the configured time zone, enrollment, qualifying
contacts, codings, encounters, acknowledgements and the wording of dates in sentences."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cmfhir.gaps.config import CareGapConfig, Coding, matches_any
from cmfhir.gaps.model import GapStatus, MemberSnapshot

Resource = Mapping[str, Any]

__all__ = [
    "Contact",
    "Enrollment",
    "Resource",
    "acknowledgement",
    "active_enrollment",
    "canonical_in",
    "codings",
    "concept_text",
    "days_between",
    "days_text",
    "encounter_class_in",
    "facility",
    "first_contact",
    "has_coding",
    "local_date",
    "medication_concept",
    "medication_ingredients",
    "moment",
    "next_period",
    "period_label",
    "period_of",
    "qualifying_contacts",
    "reference",
    "short_date",
    "specialties",
    "today",
    "window_status",
]

DAY = timedelta(days=1)


def reference(resource: Resource) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def codings(concept: Any) -> list[Mapping[str, Any]]:
    """The codings of a CodeableConcept (or of a list of them)."""
    if isinstance(concept, list):
        return [c for item in concept for c in codings(item)]
    # Parsed JSON: dicts (isinstance against the Mapping ABC costs several times more).
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or () if isinstance(c, dict)]


def has_coding(concept: Any, specs: tuple[Coding, ...]) -> bool:
    return any(matches_any(specs, c) for c in codings(concept))


def concept_text(concept: Any, fallback: str) -> str:
    """How a CodeableConcept (or the first of a list) reads to a person: its text, a
    coding's display, or a code."""
    for item in concept if isinstance(concept, list) else [concept]:
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            return str(item["text"])
    found = codings(concept)
    for coding in found:
        if isinstance(coding.get("display"), str):
            return str(coding["display"])
    for coding in found:
        if isinstance(coding.get("code"), str):
            return str(coding["code"])
    return fallback


def canonical_in(value: Any, canonicals: Iterable[str]) -> bool:
    """A canonical reference (`url|version` allowed) names one of `canonicals`."""
    return isinstance(value, str) and value.partition("|")[0] in set(canonicals)


# -- dates ---------------------------------------------------------------------------------


def moment(value: Any, zone: ZoneInfo) -> datetime | None:
    """A FHIR date or dateTime as an aware datetime (a date alone: its start, in `zone`)."""
    if not isinstance(value, str) or not value:
        return None
    text = value
    if len(text) == len("2026"):
        text += "-01-01"
    elif len(text) == len("2026-10"):
        text += "-01"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed


def local_date(value: Any, zone: ZoneInfo) -> date | None:
    """The calendar day of a FHIR date or dateTime in `zone`."""
    parsed = moment(value, zone)
    return parsed.astimezone(zone).date() if parsed else None


def today(as_of: datetime, zone: ZoneInfo) -> date:
    """The local day of `as_of`, which must be timezone-aware (FHIR instants are)."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be a timezone-aware datetime")
    return as_of.astimezone(zone).date()


def days_between(start: date, end: date) -> int:
    return (end - start).days


def window_status(due: date, on: date) -> GapStatus:
    """Inside the window (up to and including the due day) prospective, after it open."""
    return "prospective-gap" if on <= due else "open-gap"


def days_text(count: int) -> str:
    """`1 day`, `3 days`."""
    return f"{count} day" if abs(count) == 1 else f"{count} days"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def short_date(day: date, on: date) -> str:
    """`3 Oct`, with the year when it is not the year of `on`."""
    text = f"{day.day} {_MONTHS[day.month - 1]}"
    return text if day.year == on.year else f"{text} {day.year}"


# -- enrollment ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The member's active EpisodeOfCare in a program."""

    episode: Resource
    reference: str
    start: date | None
    tier: str | None
    care_manager: str | None


def active_enrollment(
    snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig, program: str
) -> Enrollment | None:
    """The active EpisodeOfCare of `program` whose period holds `as_of` (the latest start)."""
    zone = config.zone
    on = today(as_of, zone)
    program_coding = config.program(program)
    found: list[Enrollment] = []
    for episode in snapshot.of("EpisodeOfCare"):
        if episode.get("status") not in config.enrollment.statuses:
            continue
        if not has_coding(episode.get("type"), (program_coding,)):
            continue
        period = episode.get("period") or {}
        start = local_date(period.get("start"), zone)
        end = local_date(period.get("end"), zone)
        if (start and start > on) or (end and end < on):
            continue
        tier = None
        for extension in episode.get("extension") or ():
            if extension.get("url") == config.enrollment.acuity_tier_extension:
                value = extension.get("valueCode")
                tier = value if value in config.enrollment.acuity_tiers else None
        manager = (episode.get("careManager") or {}).get("reference")
        found.append(
            Enrollment(episode, reference(episode), start, tier, manager if manager else None)
        )
    if not found:
        return None
    return max(found, key=lambda e: e.start or date.min)


# -- contacts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """A qualifying contact: a completed Communication by a qualifying medium."""

    reference: str
    sent: datetime
    day: date
    medium: str
    in_person: bool


def qualifying_contacts(snapshot: MemberSnapshot, config: CareGapConfig) -> Sequence[Contact]:
    """The member's qualifying contacts, oldest first: found once per snapshot and
    configuration (three rules read them)."""
    return snapshot.derived(
        ("qualifying-contacts", id(config)), lambda: tuple(_qualifying_contacts(snapshot, config))
    )


def _qualifying_contacts(snapshot: MemberSnapshot, config: CareGapConfig) -> list[Contact]:
    rules = config.qualifying_contact
    zone = config.zone
    out: list[Contact] = []
    for communication in snapshot.of("Communication"):
        if communication.get("status") not in rules.statuses:
            continue
        sent = moment(communication.get("sent"), zone)
        if sent is None:
            continue
        sender = (communication.get("sender") or {}).get("reference")
        if isinstance(sender, str) and sender.partition("/")[0] not in rules.sender_types:
            continue
        medium = next(
            (
                spec
                for concept in communication.get("medium") or ()
                for coding in codings(concept)
                for spec in rules.media
                if spec.matches(coding)
            ),
            None,
        )
        if medium is None:
            continue
        in_person = has_coding(communication.get("medium") or [], rules.in_person_media)
        out.append(
            Contact(
                reference(communication),
                sent,
                sent.astimezone(zone).date(),
                medium.display or medium.code,
                in_person,
            )
        )
    out.sort(key=lambda c: (c.sent, c.reference))
    return out


def first_contact(contacts: Sequence[Contact], after: datetime) -> Contact | None:
    """The first contact at or after `after`."""
    return next((c for c in contacts if c.sent >= after), None)


def medication_concept(snapshot: MemberSnapshot, resource: Resource) -> Any:
    """The medication's CodeableConcept, following medicationReference (also contained)."""
    concept = resource.get("medicationCodeableConcept")
    if concept is not None:
        return concept
    ref = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(ref, str):
        return None
    if ref.startswith("#"):
        contained = next(
            (c for c in resource.get("contained") or () if c.get("id") == ref[1:]), None
        )
        return contained.get("code") if contained else None
    medication = snapshot.get(ref)
    return medication.get("code") if medication else None


def medication_ingredients(snapshot: MemberSnapshot, resource: Resource) -> list[Mapping[str, Any]]:
    """The codings of the ingredients of the Medication a resource names (contained or not):
    `Medication.ingredient.itemCodeableConcept`, the RxNorm ingredients of a product."""
    ref = (resource.get("medicationReference") or {}).get("reference")
    if not isinstance(ref, str):
        return []
    if ref.startswith("#"):
        medication = next(
            (c for c in resource.get("contained") or () if c.get("id") == ref[1:]), None
        )
    else:
        medication = snapshot.get(ref)
    return [
        coding
        for ingredient in (medication or {}).get("ingredient") or ()
        for coding in codings(ingredient.get("itemCodeableConcept"))
    ]


# -- encounters ------------------------------------------------------------------------------


def encounter_class_in(encounter: Resource, specs: tuple[Coding, ...]) -> bool:
    value = encounter.get("class")
    classes = value if isinstance(value, list) else [value]
    return any(isinstance(c, dict) and matches_any(specs, c) for c in classes)


def _participants(snapshot: MemberSnapshot, encounter: Resource) -> Iterator[Resource]:
    for participant in encounter.get("participant") or ():
        ref = (participant.get("individual") or {}).get("reference")
        if isinstance(ref, str):
            found = snapshot.get(ref)
            if found is not None:
                yield found


def specialties(
    snapshot: MemberSnapshot, encounter: Resource, system: str | None = None
) -> list[Mapping[str, Any]]:
    """Codings of the encounter's serviceType and its PractitionerRoles' specialties."""
    found = list(codings(encounter.get("serviceType")))
    for resource in _participants(snapshot, encounter):
        if resource.get("resourceType") == "PractitionerRole":
            found.extend(codings(resource.get("specialty") or []))
    return [c for c in found if system is None or c.get("system") == system]


def facility(snapshot: MemberSnapshot, encounter: Resource) -> str | None:
    """The name of the organization or location of an encounter, if recorded."""
    candidates = [encounter.get("serviceProvider") or {}]
    candidates += [(loc.get("location") or {}) for loc in encounter.get("location") or ()]
    for ref in candidates:
        if isinstance(ref.get("display"), str):
            return str(ref["display"])
        target = ref.get("reference")
        found = snapshot.get(target) if isinstance(target, str) else None
        if found is not None and isinstance(found.get("name"), str):
            return str(found["name"])
    return None


# -- acknowledgements ------------------------------------------------------------------------


def acknowledgement(
    snapshot: MemberSnapshot, config: CareGapConfig, rule: str, key: str
) -> tuple[str, str, date | None] | None:
    """A mitigation a person (not the engine) recorded on this gap's DetectedIssue:
    (its reference, what was done, when)."""
    value = f"{snapshot.patient_id}/{rule}/{key}" if key else f"{snapshot.patient_id}/{rule}"
    for issue in snapshot.of("DetectedIssue"):
        identifiers = issue.get("identifier") or ()
        if not any(
            i.get("system") == config.gap_identifier_system and i.get("value") == value
            for i in identifiers
        ):
            continue
        for mitigation in issue.get("mitigation") or ():
            if any(
                c.get("system") == config.engine_mitigation_system
                for c in codings(mitigation.get("action"))
            ):
                continue
            action = concept_text(mitigation.get("action"), "acknowledged")
            when = local_date(mitigation.get("date"), config.zone)
            return reference(issue), action, when
    return None


# -- calendar periods ------------------------------------------------------------------------

_MONTHS_IN = {"month": 1, "quarter": 3, "year": 12}


def period_of(day: date, calendar: str) -> tuple[date, date]:
    """The calendar month, quarter or year holding `day`: (first day, last day)."""
    size = _MONTHS_IN[calendar]
    first_month = (day.month - 1) // size * size + 1
    start = date(day.year, first_month, 1)
    return start, next_period(start, calendar) - DAY


def next_period(start: date, calendar: str) -> date:
    """The first day of the period after the one starting on `start`."""
    months = start.year * 12 + start.month - 1 + _MONTHS_IN[calendar]
    return date(months // 12, months % 12 + 1, 1)


def period_label(start: date, calendar: str) -> tuple[str, str]:
    """(stable key, words): ("2026-10", "October 2026"), ("2026-Q4", "Q4 2026"),
    ("2026", "2026")."""
    if calendar == "month":
        return f"{start:%Y-%m}", f"{start:%B %Y}"
    if calendar == "quarter":
        quarter = (start.month - 1) // _MONTHS_IN["quarter"] + 1
        return f"{start.year}-Q{quarter}", f"Q{quarter} {start.year}"
    return f"{start.year}", f"{start.year}"
