"""`missed-appointment`: an Appointment the member did not attend (status `noshow`), until a
later kept appointment or a qualifying contact (NC data-system guidance: "missed
appointments")."""

from __future__ import annotations

from datetime import datetime

from cmfhir.gaps.config import CareGapConfig
from cmfhir.gaps.model import Gap, MemberSnapshot
from cmfhir.gaps.rules._common import (
    active_enrollment,
    concept_text,
    first_contact,
    moment,
    qualifying_contacts,
    reference,
    short_date,
    today,
)

CODE = "missed-appointment"
# The resource types it reads (gaps/ruleset.py).
READS = frozenset({"EpisodeOfCare", "Appointment", "Communication"})


def evaluate(snapshot: MemberSnapshot, as_of: datetime, config: CareGapConfig) -> list[Gap]:
    rule = config.rules.missed_appointment
    zone = config.zone
    if rule.enrolled_only and active_enrollment(snapshot, as_of, config, rule.program) is None:
        return []
    on = today(as_of, zone)
    contacts = [c for c in qualifying_contacts(snapshot, config) if c.sent <= as_of]
    kept = sorted(
        (start, reference(appointment))
        for appointment in snapshot.of("Appointment")
        if appointment.get("status") in rule.kept_statuses
        and (start := moment(appointment.get("start"), zone)) is not None
        and start <= as_of
    )
    gaps: list[Gap] = []
    for appointment in snapshot.of("Appointment"):
        if appointment.get("status") not in rule.missed_statuses:
            continue
        start = moment(appointment.get("start"), zone)
        if start is None or start > as_of:
            continue
        day = start.astimezone(zone).date()
        if (on - day).days > rule.lookback.days:
            continue
        key = reference(appointment)
        what = appointment.get("description") or concept_text(
            appointment.get("serviceType") or appointment.get("appointmentType"), ""
        )
        about = f" ({what})" if what else ""
        detail = f"Missed appointment{about} on {short_date(day, on)}"
        later = next(((s, r) for s, r in kept if s > start), None)
        contact = first_contact(contacts, start)
        if later is not None and (contact is None or later[0] <= contact.sent):
            when = later[0].astimezone(zone).date()
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=detail,
                    evidence=(key, later[1]),
                    identified=start,
                    mitigation=f"Kept an appointment on {short_date(when, on)}",
                )
            )
        elif contact is not None:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="closed-gap",
                    detail=detail,
                    evidence=(key, contact.reference),
                    identified=start,
                    mitigation=f"Contacted {contact.medium} on {short_date(contact.day, on)}",
                )
            )
        else:
            gaps.append(
                Gap(
                    rule=CODE,
                    key=key,
                    status="open-gap",
                    detail=f"{detail}; no contact or kept appointment since",
                    evidence=(key,),
                    identified=start,
                )
            )
    return gaps
