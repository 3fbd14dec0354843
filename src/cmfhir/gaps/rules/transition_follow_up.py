"""`transition-follow-up`: a care-manager contact after an inpatient, ED or observation
discharge of an enrolled member (NC PHP contract: the care manager follows up after
discharge; the number of days is configured, unverified)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    active_enrollment,
    days_text,
    encounter_class_in,
    facility,
    first_contact,
    moment,
    qualifying_contacts,
    reference,
    short_date,
    today,
    window_status,
)

CODE = "transition-follow-up"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset({"EpisodeOfCare", "Encounter", "Communication", "Organization", "Location"})


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.transition_follow_up
    zone = config.zone
    enrollment = active_enrollment(snapshot, as_of, config, rule.program)
    if rule.enrolled_only and enrollment is None:
        return []
    on = today(as_of, zone)
    contacts = qualifying_contacts(snapshot, config)
    gaps: list[Gap] = []
    for encounter in snapshot.of("Encounter"):
        if encounter.get("status") not in rule.encounter_statuses:
            continue
        if not encounter_class_in(encounter, rule.encounter_classes):
            continue
        ended = moment((encounter.get("period") or {}).get("end"), zone)
        if ended is None or ended > as_of:
            continue
        day = ended.astimezone(zone).date()
        if (on - day).days > rule.lookback.days:
            continue
        if enrollment is not None and enrollment.start is not None and day < enrollment.start:
            continue
        due = day + timedelta(days=rule.contact.days)
        place = facility(snapshot, encounter)
        where = f" from {place}" if place else ""
        key = reference(encounter)
        contact = first_contact(contacts, ended)
        if contact is not None and contact.sent <= as_of:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=f"Discharged{where} on {short_date(day, on)}; "
                    f"contacted {contact.medium} on {short_date(contact.day, on)}",
                    evidence=(key, contact.reference),
                    identified=ended,
                    due=due,
                    mitigation=f"Contacted {contact.medium} on {short_date(contact.day, on)}, "
                    f"{days_text((contact.day - day).days)} after discharge",
                )
            )
            continue
        gaps.append(
            Gap(
                rule=CODE,
                key=key,
                status=window_status(due, on),
                detail=f"Discharged{where} on {short_date(day, on)}; no contact since "
                f"— due {short_date(due, on)}",
                evidence=(key,),
                identified=ended,
                due=due,
            )
        )
    return gaps
