"""Two small care-gap rules the engine tests run (the real ones live in cmfhir.gaps.rules):

- `transition-follow-up`: an inpatient Encounter of an enrolled member (an active
  EpisodeOfCare) finished; prospective for 7 days after `period.end`, open after; closed by
  a completed Communication sent after the discharge.
- `no-care-manager`: an active enrollment with no care manager.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from cmfhir.gaps.model import Gap, MemberSnapshot


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _enrolled(snapshot: MemberSnapshot) -> list[Any]:
    return [e for e in snapshot.of("EpisodeOfCare") if e.get("status") == "active"]


def _transition(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    if not _enrolled(snapshot):
        return []
    gaps = []
    for encounter in snapshot.of("Encounter"):
        end = (encounter.get("period") or {}).get("end")
        if encounter.get("status") != "finished" or encounter.get("class", {}).get("code") != "IMP":
            continue
        if end is None:
            continue
        discharged = _moment(end)
        due = discharged + timedelta(days=7)
        ref = f"Encounter/{encounter['id']}"
        contacts = [
            c
            for c in snapshot.of("Communication")
            if c.get("status") == "completed" and c.get("sent") and _moment(c["sent"]) > discharged
        ]
        if contacts:
            status, mitigation = "closed-gap", f"Contacted on {contacts[0]['sent'][:10]}"
            evidence: tuple[str, ...] = (ref, f"Communication/{contacts[0]['id']}")
        else:
            status = "open-gap" if as_of > due else "prospective-gap"
            mitigation, evidence = None, (ref,)
        gaps.append(
            Gap(
                rule="transition-follow-up",
                key=ref,
                status=status,  # type: ignore[arg-type]
                detail=f"Discharged on {end[:10]}; no contact since — due {due.date()}",
                evidence=evidence,
                identified=discharged,
                due=due.date(),
                mitigation=mitigation,
            )
        )
    return gaps


def _no_care_manager(snapshot: MemberSnapshot, as_of: datetime, config: Any) -> list[Gap]:
    episodes = _enrolled(snapshot)
    if not episodes or any(e.get("careManager") for e in episodes):
        return []
    ref = f"EpisodeOfCare/{episodes[0]['id']}"
    return [Gap("no-care-manager", "", "open-gap", "Enrolled with no care manager", (ref,))]


RULES = [
    SimpleNamespace(CODE="transition-follow-up", evaluate=_transition),
    SimpleNamespace(CODE="no-care-manager", evaluate=_no_care_manager),
]
