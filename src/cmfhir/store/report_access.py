"""What a report's principal may count, worked out once per report run (store/reporting.py).

The access predicate (store/access.py) decides, per resource row, whether the principal may
see it *now*: its scopes grant the type (and their granular filters match), the row's member
is in the principal's population, and a sensitive label does not hide it. A report counts
member-months, and a member-month of a past period belongs to whoever the member was
assigned to then (docs/reports.md, "Who may run them"). So a report splits the predicate:

- the members the principal may see now: `visible()` itself, on the Patient rows, run once;
- the member-months of a past period assigned to the principal then: their enrollment as it
  was recorded at the month's end names the principal as care manager, or an Organization
  where the principal is a supervisor (the same supervisor rule as the predicate's), or the
  member's CareTeam as it was recorded at the month's end was active with the principal
  among its participants (the predicate's care-team rule, read from the versions:
  `team_intervals`);
- every row a report reads must also pass the rest of the predicate — its type and
  granular filters, and the sensitive labels (with the member's Consent): evaluated once,
  by the predicate's own conditions, on the few rows that could fail it (the rows carrying
  a sensitive label, plus every row of a type whose grant has a filter), whose ids are then
  left out of every report query.

The report's SQL then takes arrays (visible members, hidden rows, supervised
organizations) instead of the 17 KB predicate text in every subquery: PostgreSQL plans the
predicate once per run, on one table, instead of once per resource alias per query.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.store.access import (
    SENSITIVE_LABELS,
    members_query,
    not_hidden,
    supervised_organizations,
    token_filter,
    visible,
)
from cmfhir.store.schema import idx_token, resource

__all__ = ["ReportAccess", "report_access", "team_intervals"]


@dataclass(frozen=True, slots=True)
class ReportAccess:
    """The parameters a narrowed report's SQL takes (store/reporting.py)."""

    members_now: list[str]  # Patient ids the principal may see now
    hidden_members: list[str]  # Patient ids whose Patient row the principal may not see
    hidden_rids: list[int]  # rows of the report's types the principal may not see
    practitioner: str | None  # "Practitioner/<id>" for a care-team user, else None
    supervised: list[str]  # "Organization/<id>" where that practitioner is a supervisor
    # When that practitioner was on a member's active CareTeam: (member, from, until) per
    # CareTeam version (from None: the first version; until None: the current one).
    teams: list[tuple[str, datetime | None, datetime | None]] = field(default_factory=list)

    def parameters(self) -> dict[str, Any]:
        return {
            "members_now": self.members_now,
            "hidden_members": self.hidden_members,
            "hidden_rids": self.hidden_rids,
            "me": self.practitioner,
            "supervised": self.supervised,
            "team_members": [t[0] for t in self.teams],
            "team_from": [t[1] for t in self.teams],
            "team_until": [t[2] for t in self.teams],
        }


# The CareTeam versions naming the practitioner (`:names`, a containment pattern) as a
# participant while the team was active, each with the interval of month ends it holds for:
# from when it was recorded (the first version: from always) until the next version was
# recorded (a deletion ends it too). As for enrollments (store/reporting.py), a month ends
# with the version recorded last before it.
_TEAM_INTERVALS = text(
    """
WITH teams AS (
  SELECT DISTINCT h.rid FROM resource_history h
  WHERE h.resource_type = 'CareTeam' AND h.content @> CAST(:names AS jsonb)
),
versions AS (
  SELECT h.patient_id, h.content,
         CASE WHEN row_number() OVER w > 1 THEN h.last_updated END AS valid_from,
         lead(h.last_updated) OVER w AS valid_until
  FROM resource_history h JOIN teams t ON t.rid = h.rid
  WINDOW w AS (PARTITION BY h.rid ORDER BY h.version)
)
SELECT patient_id, valid_from, valid_until FROM versions
WHERE patient_id IS NOT NULL AND content @> CAST(:names AS jsonb)
  AND content->>'status' = 'active'
"""
)


async def team_intervals(
    conn: AsyncConnection, practitioner: str
) -> list[tuple[str, datetime | None, datetime | None]]:
    """When `practitioner` (an id) was a participant of each member's active CareTeam."""
    names = json.dumps({"participant": [{"member": {"reference": f"Practitioner/{practitioner}"}}]})
    found = await conn.execute(_TEAM_INTERVALS, {"names": names})
    return [(row[0], row[1], row[2]) for row in found]


def _apart_from_population(principal: Principal, res: Any) -> ColumnElement[bool]:
    """`visible(principal, res, "s")` without the population condition: the scope grants
    the type, its granular filters match, and no sensitive label hides the row."""
    options: list[ColumnElement[bool]] = []
    for scope in principal.grants:
        if "s" not in scope.permissions:
            continue
        parts: list[ColumnElement[bool]] = []
        if scope.resource_type != "*":
            parts.append(res.c.resource_type == scope.resource_type)
        parts.extend(token_filter(f, res, scope.resource_type) for f in scope.filters)
        parts.append(not_hidden(principal, scope, res))
        options.append(and_(*parts))
    return or_(*options) if options else false()


def _filtered_types(principal: Principal, types: Iterable[str]) -> list[str]:
    """The types among `types` some search grant of which carries a granular filter."""
    wanted = set(types)
    found: set[str] = set()
    for scope in principal.grants:
        if "s" in scope.permissions and scope.filters:
            found |= wanted if scope.resource_type == "*" else {scope.resource_type} & wanted
    return sorted(found)


def _population(principal: Principal) -> Select[Any]:
    """The ids of the Patients in the principal's population now. A backend client's is
    every member; a care-team user's, `members_query` (the predicate's own population
    query); any other principal's, the predicate in full on the Patient rows. (Their
    sensitive labels and granular filters are the hidden rows' part.)"""
    patient = resource.alias("p")
    live = select(patient.c.id).where(
        patient.c.resource_type == "Patient", patient.c.deleted.is_(False)
    )
    families = {g.family for g in principal.grants if "s" in g.permissions}
    if families == {"system"}:
        return live
    practitioner = principal.practitioner
    if families == {"user"} and practitioner is not None:
        members = members_query(practitioner).subquery()
        return live.where(patient.c.id.in_(select(members.c[0])))
    return live.where(visible(principal, patient, "s"))


async def report_access(
    conn: AsyncConnection, principal: Principal | None, types: Iterable[str]
) -> ReportAccess | None:
    """What `principal` may count in a report reading `types`; None when it may count
    everything (an unrestricted principal: the report's SQL runs unnarrowed)."""
    if principal is not None and principal.unrestricted:
        return None
    if principal is None:
        return ReportAccess([], [], [], None, [])
    types = sorted(set(types) | {"Patient"})
    members_now = [row[0] for row in await conn.execute(_population(principal))]
    label = idx_token.alias("l")
    labelled = [
        row[0]
        for row in await conn.execute(
            select(label.c.rid)
            .where(
                label.c.resource_type.in_(types),
                label.c.param == "_security",
                or_(*(and_(label.c.system == s, label.c.code == c) for s, c in SENSITIVE_LABELS)),
            )
            .distinct()
        )
    ]
    filtered = _filtered_types(principal, types)
    hidden_rids: list[int] = []
    hidden_members: list[str] = []
    if labelled or filtered:
        # Only the rows that could fail: the predicate is planned only when there are any.
        row = resource.alias("r")
        candidates: ColumnElement[bool] = row.c.rid.in_(labelled)
        if filtered:
            candidates = or_(candidates, row.c.resource_type.in_(filtered))
        hidden = await conn.execute(
            select(row.c.rid, row.c.resource_type, row.c.id).where(
                row.c.resource_type.in_(types),
                row.c.deleted.is_(False),
                candidates,
                not_(_apart_from_population(principal, row)),
            )
        )
        for rid, resource_type, id in hidden:
            hidden_rids.append(rid)
            if resource_type == "Patient":
                hidden_members.append(id)
    practitioner = principal.practitioner
    supervised: list[str] = []
    teams: list[tuple[str, datetime | None, datetime | None]] = []
    if practitioner is not None and any(g.family == "user" for g in principal.grants):
        supervised = [
            f"Organization/{r[0]}"
            for r in await conn.execute(supervised_organizations(practitioner).distinct())
        ]
        teams = await team_intervals(conn, practitioner)
    else:
        practitioner = None
    return ReportAccess(
        members_now,
        hidden_members,
        hidden_rids,
        f"Practitioner/{practitioner}" if practitioner is not None else None,
        supervised,
        teams,
    )
