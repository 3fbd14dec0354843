"""The access predicate: the one place where what a principal may see is decided, as a SQL
condition on resource rows (docs/security.md).

Every query path that selects resource rows (read, vread, search page and total, chains and
`_has`, `_include`/`_revinclude`, history, conditional writes' searches, Bundle entries)
ANDs `visible(principal, alias, permission)` into its WHERE clause, so results are narrowed
in SQL, never filtered afterwards, and counts never reveal a hidden row. No principal (None)
sees nothing. Writes go through `check_writes` before anything is stored.

A row is visible when some SMART scope of the principal grants the permission on its type
(and its granular filters match) and the row lies in that scope family's population:

- `patient/`: the patient's compartment (`patient_id`), and shared resources that belong to
  no member (Practitioner, Organization, Medication, Questionnaire...);
- `user/` with a Practitioner fhirUser: resources of no member, and the members where the
  practitioner is a participant of an active CareTeam or the careManager of an active
  EpisodeOfCare, or holds a PractitionerRole with the care-team-role `supervisor` code at an
  Organization managing the member's active EpisodeOfCare. Evaluated against the index
  tables by every query: a membership change applies to the next request;
- `system/`: every row of the granted types.

Resources labelled sensitive in `meta.security` are hidden from `user/` scopes unless an
active Consent of the member permits the practitioner (or one of their Organizations or
CareTeams) for that label, and from `system/` scopes unless the client holds the sensitive
scope; a member always sees their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from cmfhir.auth.principal import Principal
from cmfhir.auth.scopes import ResourceScope, TokenFilter
from cmfhir.config import default_profiles_dir
from cmfhir.errors import Forbidden
from cmfhir.resources.search_parameters import load_registry
from cmfhir.store.schema import idx_reference, idx_token, resource

__all__ = [
    "CARE_TEAM_ROLE",
    "SENSITIVE_LABELS",
    "SHARED_TYPES",
    "check_writes",
    "members_query",
    "not_hidden",
    "supervised_organizations",
    "token_filter",
    "visible",
]

# Resources that belong to no member and that a member's own record points at.
SHARED_TYPES = frozenset(
    {
        "ActivityDefinition",
        "CodeSystem",
        "ConceptMap",
        "Endpoint",
        "HealthcareService",
        "Library",
        "Location",
        "Measure",
        "Medication",
        "Organization",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Questionnaire",
        "SearchParameter",
        "StructureDefinition",
        "Substance",
        "ValueSet",
    }
)

CARE_TEAM_ROLE = "https://cmfhir.org/fhir/CodeSystem/care-team-role"
SUPERVISOR = "supervisor"

_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SENSITIVE_LABELS: tuple[tuple[str, str], ...] = (
    (_ACT_CODE, "SUD"),
    (_ACT_CODE, "ETH"),
    (_ACT_CODE, "PSY"),
    (_ACT_CODE, "HIV"),
    (_CONFIDENTIALITY, "R"),
    (_CONFIDENTIALITY, "V"),
)


def _active(rid: Any, status: str = "active") -> ColumnElement[bool]:
    t = idx_token.alias()
    return exists(
        select(literal(1))
        .select_from(t)
        .where(t.c.rid == rid, t.c.param == "status", t.c.code == status)
    )


def _has_code(rid: Any, param: str, system: str, code: str) -> ColumnElement[bool]:
    t = idx_token.alias()
    return exists(
        select(literal(1))
        .select_from(t)
        .where(t.c.rid == rid, t.c.param == param, t.c.system == system, t.c.code == code)
    )


def _refers(rid: Any, param: str, target_type: str, target_id: Any) -> ColumnElement[bool]:
    x = idx_reference.alias()
    return exists(
        select(literal(1))
        .select_from(x)
        .where(
            x.c.rid == rid,
            x.c.param == param,
            x.c.target_type == target_type,
            x.c.target_id == target_id,
        )
    )


def supervised_organizations(practitioner: str) -> Select[Any]:
    """Organizations where the practitioner holds an active supervisor PractitionerRole."""
    role = resource.alias()
    org = idx_reference.alias()
    inactive = idx_token.alias()
    return (
        select(org.c.target_id)
        .select_from(role.join(org, org.c.rid == role.c.rid))
        .where(
            role.c.resource_type == "PractitionerRole",
            role.c.deleted.is_(False),
            org.c.param == "organization",
            org.c.target_type == "Organization",
            _refers(role.c.rid, "practitioner", "Practitioner", practitioner),
            _has_code(role.c.rid, "role", CARE_TEAM_ROLE, SUPERVISOR),
            not_(
                exists(
                    select(literal(1))
                    .select_from(inactive)
                    .where(
                        inactive.c.rid == role.c.rid,
                        inactive.c.param == "active",
                        inactive.c.code == "false",
                    )
                )
            ),
        )
    )


def members_query(practitioner: str) -> Select[Any]:
    """The members a practitioner may see, as one uncorrelated query (see the module)."""
    team = resource.alias()
    episode = resource.alias()
    supervised = resource.alias()
    managing = idx_reference.alias()
    on_team = select(team.c.patient_id).where(
        team.c.resource_type == "CareTeam",
        team.c.deleted.is_(False),
        team.c.patient_id.is_not(None),
        _active(team.c.rid),
        _refers(team.c.rid, "participant", "Practitioner", practitioner),
    )
    manager = select(episode.c.patient_id).where(
        episode.c.resource_type == "EpisodeOfCare",
        episode.c.deleted.is_(False),
        episode.c.patient_id.is_not(None),
        _active(episode.c.rid),
        _refers(episode.c.rid, "care-manager", "Practitioner", practitioner),
    )
    supervisor = (
        select(supervised.c.patient_id)
        .select_from(supervised.join(managing, managing.c.rid == supervised.c.rid))
        .where(
            supervised.c.resource_type == "EpisodeOfCare",
            supervised.c.deleted.is_(False),
            supervised.c.patient_id.is_not(None),
            _active(supervised.c.rid),
            managing.c.param == "organization",
            managing.c.target_type == "Organization",
            managing.c.target_id.in_(supervised_organizations(practitioner)),
        )
    )
    return select(union(on_team, manager, supervisor).subquery().c[0])


def _label(res: Any, system: str, code: str) -> ColumnElement[bool]:
    value = json.dumps({"meta": {"security": [{"system": system, "code": code}]}})
    labelled = res.c.content.bool_op("@>")(cast(literal(value, Text), JSONB))
    # A deleted version has no content (null): it carries no label.
    return func.coalesce(labelled, false())


def _recipient(actor: Any, practitioner: str) -> ColumnElement[bool]:
    """The Consent actor reference row `actor` names the practitioner, an Organization they
    hold a role at, or a CareTeam they are on."""
    role = resource.alias()
    org = idx_reference.alias()
    team = resource.alias()
    organizations = (
        select(org.c.target_id)
        .select_from(role.join(org, org.c.rid == role.c.rid))
        .where(
            role.c.resource_type == "PractitionerRole",
            role.c.deleted.is_(False),
            org.c.param == "organization",
            org.c.target_type == "Organization",
            _refers(role.c.rid, "practitioner", "Practitioner", practitioner),
        )
    )
    teams = select(team.c.id).where(
        team.c.resource_type == "CareTeam",
        team.c.deleted.is_(False),
        _active(team.c.rid),
        _refers(team.c.rid, "participant", "Practitioner", practitioner),
    )
    return or_(
        and_(actor.c.target_type == "Practitioner", actor.c.target_id == practitioner),
        and_(actor.c.target_type == "Organization", actor.c.target_id.in_(organizations)),
        and_(actor.c.target_type == "CareTeam", actor.c.target_id.in_(teams)),
    )


def _consented(res: Any, system: str, code: str, practitioner: str) -> ColumnElement[bool]:
    """An active Consent of the row's member permits the practitioner for this label."""
    consent = resource.alias()
    actor = idx_reference.alias()
    return exists(
        select(literal(1))
        .select_from(consent)
        .where(
            consent.c.resource_type == "Consent",
            consent.c.deleted.is_(False),
            consent.c.patient_id == res.c.patient_id,
            _active(consent.c.rid),
            consent.c.content["provision"]["type"].astext == "permit",
            _has_code(consent.c.rid, "security-label", system, code),
            exists(
                select(literal(1))
                .select_from(actor)
                .where(
                    actor.c.rid == consent.c.rid,
                    actor.c.param == "actor",
                    _recipient(actor, practitioner),
                )
            ),
        )
    )


def not_hidden(principal: Principal, scope: ResourceScope, res: Any) -> ColumnElement[bool]:
    """Sensitive rows this scope may not show."""
    if scope.family == "patient":
        return true()  # the member's own record (the population says whose)
    if scope.family == "system":
        if principal.sees_sensitive:
            return true()
        return not_(or_(*(_label(res, s, c) for s, c in SENSITIVE_LABELS)))
    practitioner = principal.practitioner
    if practitioner is None:
        member = principal.member
        hidden = or_(*(_label(res, s, c) for s, c in SENSITIVE_LABELS))
        return or_(res.c.patient_id == member, not_(hidden)) if member else not_(hidden)
    return and_(
        *(
            or_(not_(_label(res, s, c)), _consented(res, s, c, practitioner))
            for s, c in SENSITIVE_LABELS
        )
    )


def _population(principal: Principal, scope: ResourceScope, res: Any) -> ColumnElement[bool]:
    if scope.family == "system":
        return true()
    shared = and_(res.c.patient_id.is_(None), res.c.resource_type.in_(sorted(SHARED_TYPES)))
    if scope.family == "patient":
        member = principal.member
        return or_(res.c.patient_id == member, shared) if member else shared
    practitioner = principal.practitioner
    if practitioner is not None:
        return or_(
            res.c.patient_id.is_(None),
            res.c.patient_id.in_(members_query(practitioner)),
        )
    member = principal.member  # a user/ token whose fhirUser is a Patient
    return or_(res.c.patient_id == member, shared) if member else shared


def _stored_as(resource_type: str, param: str) -> tuple[str, ...]:
    """The names `param`'s index rows of `resource_type` are stored under: its own, or for a
    union of other parameters (`combo-code` is `code` and `component-code`) theirs, as the
    indexer stores them (store/indexing.py). The definitions are the core's, which is
    where such unions come from."""
    if resource_type == "*":
        return (param,)
    stored = load_registry(default_profiles_dir()).stored_under(resource_type).get(param)
    return stored or (param,)


def token_filter(f: TokenFilter, res: Any, resource_type: str = "*") -> ColumnElement[bool]:
    """Rows of `res` (of `resource_type`, "*" for any) with a token value of the filter's
    parameter matching one of its values."""
    t = idx_token.alias()
    names = _stored_as(resource_type, f.param)
    options: list[ColumnElement[bool]] = []
    for system, code in f.values:
        parts: list[ColumnElement[bool]] = []
        if system is not None:
            parts.append(t.c.system == system)
        if code is not None:
            parts.append(t.c.code == code)
        options.append(and_(true(), *parts))
    return exists(
        select(literal(1))
        .select_from(t)
        .where(
            t.c.rid == res.c.rid,
            t.c.param == names[0] if len(names) == 1 else t.c.param.in_(names),
            or_(*options),
        )
    )


def visible(principal: Principal | None, res: Any, permission: str = "r") -> ColumnElement[bool]:
    """The rows of `res` (an alias of `resource` or `resource_history`) `principal` may see
    with `permission` ("r": read, vread, includes, instance history; "s": search, type and
    system history). None sees nothing."""
    if principal is None:
        return false()
    if principal.unrestricted:
        return true()
    options: list[ColumnElement[bool]] = []
    for scope in principal.grants:
        if permission not in scope.permissions:
            continue
        parts: list[ColumnElement[bool]] = []
        if scope.resource_type != "*":
            parts.append(res.c.resource_type == scope.resource_type)
        parts.extend(token_filter(f, res, scope.resource_type) for f in scope.filters)
        parts.append(_population(principal, scope, res))
        parts.append(not_hidden(principal, scope, res))
        options.append(and_(*parts))
    return or_(*options) if options else false()


async def check_writes(
    conn: AsyncConnection,
    principal: Principal | None,
    writes: Sequence[tuple[str, str, str | None, str | None]],
) -> None:
    """Refuse (403) unless the principal may make every write: (type, permission letter,
    new member, previous member). A write must be granted by a scope covering its type and
    permission whose population holds the member before and after it."""
    if principal is not None and principal.unrestricted:
        return
    if principal is None:
        raise Forbidden("No principal: the write is refused")
    practitioner = principal.practitioner
    reach: set[str] = set()
    if practitioner is not None and any(g.family == "user" for g in principal.grants):
        wanted = sorted({m for _, _, new, old in writes for m in (new, old) if m is not None})
        if wanted:
            query = members_query(practitioner).subquery()
            rows = await conn.execute(select(query.c[0]).where(query.c[0].in_(wanted)))
            reach = {row[0] for row in rows}
    for resource_type, permission, new, old in writes:
        if not any(
            scope.covers(resource_type, permission)
            and _may_write(principal, scope, new, old, reach)
            for scope in principal.grants
        ):
            raise Forbidden(
                f"The token's scopes do not permit this {_WORDS[permission]} of {resource_type}"
            )


_WORDS = {"c": "create", "u": "update", "d": "delete"}


def _may_write(
    principal: Principal,
    scope: ResourceScope,
    new: str | None,
    old: str | None,
    reach: set[str],
) -> bool:
    if scope.family == "system":
        return True
    if scope.family == "user" and principal.practitioner is not None:
        return all(m is None or m in reach for m in (new, old))
    member = principal.member
    return member is not None and new == member and old in (None, member)
