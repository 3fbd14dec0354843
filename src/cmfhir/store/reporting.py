"""The SQL of the care-management reports (reports/): computed in PostgreSQL over the index
tables and the stored versions, never by loading resources into Python.

Every report starts from the same member-months: for each month of the period, each member
with a TCM enrollment (an EpisodeOfCare of the configured program type) whose period
overlaps that month, in an enrolled status, as the enrollment was recorded last before the
month ended (`resource_history`), so a member who changed acuity tier or care manager counts
with what held at the month's end, and a month closed stays closed when the record changes
later. An enrollment recorded only after the month ended counts with its first version.
Months are calendar months in the configured time zone.

The scope (`organization`, `practitioner`, `group`) narrows the member-months: the
enrollment's managingOrganization, its careManager, or membership of the Group.

Every report reads only what the transaction's principal may see (store/access.py), in SQL:
the member-months are those of the members whose Patient the principal may search (one
condition in `scoped`, shared by every report), and each resource row a report reads
(enrollments, contacts, responses, care plans, encounters, DetectedIssues, the Group) is
ANDed with the same predicate, so a resource hidden from the principal (a sensitive label
without Consent, a granular scope's filter) is never counted. An unrestricted principal
runs the SQL unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.sql.elements import BindParameter, TextClause

from cmfhir.auth.principal import Principal
from cmfhir.store.access_sql import visible_condition
from cmfhir.store.repository import Repository

__all__ = ["REPORT_SQL", "fetch_report"]


def _visible(alias: str) -> str:
    """Where the access predicate on the resource rows `alias` goes (see `_narrowed`)."""
    return f"__visible__({alias})"


def _visible_member(member: str) -> str:
    """Where the condition that the principal may see the member `member` goes."""
    return f"__visible_member__({member})"


_VISIBLE = re.compile(r"__visible__\((\w+)\)")
_VISIBLE_MEMBER = re.compile(r"__visible_member__\(([\w.]+)\)")


def _condition(principal: Principal | None, alias: str) -> tuple[str, list[BindParameter[Any]]]:
    """`visible(principal, resource AS alias, "s")` as SQL text (store/access_sql.py) and its
    parameters, named apart from the report's own (and from other aliases')."""
    condition = visible_condition(principal, "s")
    if condition is None:
        return "TRUE", []
    binds: list[BindParameter[Any]] = []

    def bind(value: Any) -> str:
        binds.append(bindparam(f"acl_{alias}_{len(binds)}", value))
        # Parenthesized: the text casts its parameters (`$1::VARCHAR`), and text() would
        # not read `:name::VARCHAR` as the parameter `name`.
        return f"(:{binds[-1].key})"

    return condition.render(alias, bind), binds


def _narrowed(sql: str, principal: Principal | None) -> TextClause:
    """The report's SQL with the access predicate filled in (module docstring)."""
    if principal is not None and principal.unrestricted:
        return text(_VISIBLE.sub("TRUE", _VISIBLE_MEMBER.sub("TRUE", sql)))
    conditions: dict[str, str] = {}
    binds: list[BindParameter[Any]] = []

    def fill(alias: str) -> str:
        if alias not in conditions:
            conditions[alias], found = _condition(principal, alias)
            binds.extend(found)
        return conditions[alias]

    sql = _VISIBLE_MEMBER.sub(
        lambda m: (
            f"{m[1]} IN (SELECT vp.id FROM resource vp WHERE vp.resource_type = 'Patient'"
            f" AND NOT vp.deleted AND {fill('vp')})"
        ),
        sql,
    )
    sql = _VISIBLE.sub(lambda m: fill(m[1]), sql)
    return text(sql).bindparams(*binds)


def _instant(expr: str) -> str:
    """A FHIR date or dateTime (as text) as a timestamptz; partial dates start their
    year or month, dates without a time start their day in the report's time zone."""
    return (
        f"(CASE length({expr}) WHEN 4 THEN (({expr}) || '-01-01')::timestamp AT TIME ZONE :tz"
        f" WHEN 7 THEN (({expr}) || '-01')::timestamp AT TIME ZONE :tz"
        f" WHEN 10 THEN ({expr})::timestamp AT TIME ZONE :tz"
        f" ELSE ({expr})::timestamptz END)"
    )


def _extension(content: str, url_param: str, value: str) -> str:
    return (
        f"(SELECT x->>'{value}' FROM jsonb_array_elements(COALESCE({content}->'extension',"
        f" '[]'::jsonb)) x WHERE x->>'url' = :{url_param} LIMIT 1)"
    )


_START = _instant("v.content->'period'->>'start'")
_END = _instant("v.content->'period'->>'end'")

# The member-months of the period in scope (see the module docstring).
_BASE = f"""
WITH months AS (
  SELECT m::date AS month,
         (m::timestamp AT TIME ZONE :tz) AS month_start,
         ((m + interval '1 month')::timestamp AT TIME ZONE :tz) AS month_end
  FROM generate_series(CAST(:first_month AS date), CAST(:last_month AS date),
                       interval '1 month') AS m
),
bounds AS (SELECT min(month_start) AS period_start, max(month_end) AS period_end FROM months),
group_members AS (
  SELECT substr(m->'entity'->>'reference', 9) AS member
  FROM resource g, jsonb_array_elements(COALESCE(g.content->'member', '[]'::jsonb)) m
  WHERE g.resource_type = 'Group' AND g.id = :group AND NOT g.deleted AND {_visible("g")}
    AND m->'entity'->>'reference' LIKE 'Patient/%'
    AND NOT COALESCE((m->>'inactive')::boolean, false)
),
episodes AS (
  SELECT r.rid, r.id, r.patient_id
  FROM resource r
  WHERE r.resource_type = 'EpisodeOfCare' AND NOT r.deleted AND r.patient_id IS NOT NULL
    AND {_visible("r")}
    AND EXISTS (
      SELECT 1 FROM idx_token t
      WHERE t.rid = r.rid AND t.resource_type = 'EpisodeOfCare' AND t.param = 'type'
        AND t.system = :program_system AND t.code = :program_code)
),
recorded AS (
  SELECT e.id AS episode, e.patient_id AS member, mo.month, mo.month_start, mo.month_end,
         v.content
  FROM episodes e CROSS JOIN months mo
  CROSS JOIN LATERAL (
    SELECT h.content FROM resource_history h
    WHERE h.rid = e.rid AND h.content IS NOT NULL
    ORDER BY (h.last_updated < mo.month_end) DESC,
             CASE WHEN h.last_updated < mo.month_end THEN -h.version ELSE h.version END
    LIMIT 1) v
),
enrolled AS (
  SELECT DISTINCT ON (v.member, v.month)
         v.member, v.month, v.month_start, v.month_end, v.episode,
         v.content->'careManager'->>'reference' AS care_manager,
         v.content->'managingOrganization'->>'reference' AS organization,
         COALESCE({_extension("v.content", "tier_url", "valueCode")}, 'unknown') AS tier,
         {_START} AS enrolled_from,
         {_END} AS enrolled_until
  FROM recorded v
  WHERE v.content->>'status' = ANY(CAST(:statuses AS text[]))
    AND v.content->'period'->>'start' IS NOT NULL
    AND {_START} < v.month_end
    AND (v.content->'period'->>'end' IS NULL OR {_END} >= v.month_start)
  ORDER BY v.member, v.month, {_START} DESC
),
scoped AS (
  SELECT * FROM enrolled e
  WHERE (CAST(:organization AS text) IS NULL OR e.organization = 'Organization/' || :organization)
    AND (CAST(:practitioner AS text) IS NULL OR e.care_manager = 'Practitioner/' || :practitioner)
    AND (CAST(:group AS text) IS NULL OR e.member IN (SELECT member FROM group_members))
    AND (CAST(:patient AS text) IS NULL OR e.member = :patient)
    AND {_visible_member("e.member")}
),
contacts AS (
  SELECT DISTINCT ON (c.rid) c.rid, c.id, c.patient_id AS member, d.low AS sent,
         (m.code = ANY(CAST(:in_person AS text[]))) AS in_person
  FROM resource c
  JOIN idx_date d ON d.rid = c.rid AND d.resource_type = 'Communication' AND d.param = 'sent'
  JOIN idx_token m ON m.rid = c.rid AND m.resource_type = 'Communication'
       AND m.param = 'medium' AND m.system = :medium_system
       AND m.code = ANY(CAST(:qualifying AS text[]))
  JOIN idx_token s ON s.rid = c.rid AND s.resource_type = 'Communication'
       AND s.param = 'status' AND s.code = 'completed'
  WHERE c.resource_type = 'Communication' AND NOT c.deleted AND {_visible("c")}
    AND c.patient_id IN (SELECT member FROM scoped)
    AND d.low >= (SELECT period_start FROM bounds) - interval '400 days'
    AND d.low < (SELECT period_end FROM bounds)
  ORDER BY c.rid, (m.code = ANY(CAST(:in_person AS text[]))) DESC
),
member_months AS (
  SELECT s.member, s.month, s.care_manager, s.organization, s.tier, s.episode,
         count(c.rid) AS contacts,
         count(c.rid) FILTER (WHERE c.in_person) AS in_person,
         min(c.sent) AS first_contact,
         (CAST(:requirements AS jsonb) ->> s.tier)::int AS required
  FROM scoped s
  LEFT JOIN contacts c ON c.member = s.member AND c.sent >= s.month_start
       AND c.sent < s.month_end
  GROUP BY s.member, s.month, s.care_manager, s.organization, s.tier, s.episode
)
"""

_CONTACT_COMPLIANCE = (
    _BASE
    + """
SELECT member, to_char(month, 'YYYY-MM') AS month, care_manager, tier AS acuity_tier,
       contacts, in_person, COALESCE(required, 1) AS required,
       contacts >= COALESCE(required, 1) AS compliant
FROM member_months ORDER BY member, month
"""
)

_TCM_ENCOUNTERS = (
    _BASE
    + f"""
SELECT mm.member, to_char(mm.month, 'YYYY-MM') AS month,
       to_char(mm.first_contact AT TIME ZONE :tz, 'YYYY-MM-DD') AS first_contact_date,
       mm.care_manager, mm.tier AS acuity_tier,
       EXISTS (
         SELECT 1 FROM resource w
         JOIN idx_token t ON t.rid = w.rid AND t.resource_type = 'EpisodeOfCare'
              AND t.param = 'type' AND t.system = :waiver_system AND t.code = :waiver_code
         WHERE w.resource_type = 'EpisodeOfCare' AND NOT w.deleted AND w.patient_id = mm.member
           AND {_visible("w")}
           AND w.content->>'status' = ANY(CAST(:statuses AS text[]))
       ) AS waiver
FROM member_months mm WHERE mm.contacts > 0 ORDER BY mm.month, mm.member
"""
)

_SCOPE_OF = f"""(
  (CAST(:organization AS text) IS NULL
   OR {{c}}->'managingOrganization'->>'reference' = 'Organization/' || :organization)
  AND (CAST(:practitioner AS text) IS NULL
   OR {{c}}->'careManager'->>'reference' = 'Practitioner/' || :practitioner)
  AND (CAST(:group AS text) IS NULL OR {{m}} IN (SELECT member FROM group_members))
  AND (CAST(:patient AS text) IS NULL OR {{m}} = :patient)
  AND {_visible_member("{m}")})"""

_CASELOAD = (
    _BASE
    + f"""
, latest AS (
  SELECT v.episode, v.member, v.content, {_START} AS enrolled_from, {_END} AS enrolled_until,
         {_SCOPE_OF.format(c="v.content", m="v.member")} AS in_scope,
         {_extension("v.content", "exclusion_url", "valueCodeableConcept")} AS exclusion
  FROM recorded v
  WHERE v.month = (SELECT max(month) FROM months) AND v.content->'period'->>'start' IS NOT NULL
),
moves AS (
  SELECT e.episode, e.member,
    EXISTS (SELECT 1 FROM latest o WHERE o.member = e.member AND NOT o.in_scope
            AND o.enrolled_until BETWEEN e.enrolled_from - interval '31 days'
                                     AND e.enrolled_from + interval '31 days') AS came_in,
    EXISTS (SELECT 1 FROM latest o WHERE o.member = e.member AND NOT o.in_scope
            AND o.enrolled_from BETWEEN e.enrolled_until - interval '31 days'
                                    AND e.enrolled_until + interval '31 days') AS went_out,
    e.enrolled_from >= b.period_start AND e.enrolled_from < b.period_end AS started,
    e.enrolled_until >= b.period_start AND e.enrolled_until < b.period_end AS ended,
    e.exclusion
  FROM latest e CROSS JOIN bounds b WHERE e.in_scope
),
events AS (
  SELECT CASE WHEN came_in THEN 'transferred-in' ELSE 'new' END AS kind, member,
         NULL::text AS reason
  FROM moves WHERE started AND exclusion IS NULL
  UNION ALL
  SELECT CASE WHEN went_out THEN 'transferred-out' ELSE 'closed' END, member, NULL
  FROM moves WHERE ended AND exclusion IS NULL
  UNION ALL
  SELECT 'excluded', member,
         COALESCE(exclusion::jsonb #>> '{{coding,0,code}}', exclusion::jsonb ->> 'text',
                  'unstated')
  FROM moves WHERE exclusion IS NOT NULL AND (started OR ended)
)
SELECT 'members' AS kind, care_manager, tier AS acuity_tier, NULL::text AS reason,
       count(*) AS count
FROM scoped WHERE month = (SELECT max(month) FROM months) GROUP BY care_manager, tier
UNION ALL
SELECT kind, NULL, NULL, reason, count(DISTINCT member) FROM events GROUP BY kind, reason
ORDER BY 1, 2, 3, 4
"""
)

_LAST_MONTH = "(SELECT max(month) FROM months)"

# Per member in scope at the period's end: the latest completed comprehensive assessment
# and care plan, and the intervals from enrollment to the first assessment and from that
# assessment to the first care plan after it.
_TIMELINESS_MEMBERS = (
    _BASE
    + f"""
, members AS (SELECT * FROM scoped WHERE month = {_LAST_MONTH}),
assessments AS (
  SELECT q.patient_id AS member, {_instant("q.content->>'authored'")} AS authored
  FROM resource q
  JOIN idx_token s ON s.rid = q.rid AND s.resource_type = 'QuestionnaireResponse'
       AND s.param = 'status' AND s.code IN ('completed', 'amended')
  WHERE q.resource_type = 'QuestionnaireResponse' AND NOT q.deleted AND {_visible("q")}
    AND q.patient_id IN (SELECT member FROM members)
    AND split_part(q.content->>'questionnaire', '|', 1) = :assessment_url
    AND q.content->>'authored' IS NOT NULL
),
plans AS (
  SELECT p.patient_id AS member, p.content->>'status' AS status,
         {_instant("COALESCE(p.content->>'created', p.content->'period'->>'start')")} AS made
  FROM resource p
  WHERE p.resource_type = 'CarePlan' AND NOT p.deleted AND {_visible("p")}
    AND p.patient_id IN (SELECT member FROM members)
    AND p.content->>'status' IN ('active', 'completed')
    AND COALESCE(p.content->>'created', p.content->'period'->>'start') IS NOT NULL
),
measured AS (
  SELECT m.member, m.care_manager, m.tier, m.enrolled_from,
    (SELECT max(a.authored) FROM assessments a
      WHERE a.member = m.member AND a.authored < b.period_end) AS last_assessment,
    (SELECT min(a.authored) FROM assessments a
      WHERE a.member = m.member AND a.authored >= m.enrolled_from) AS first_assessment,
    (SELECT max(p.made) FROM plans p
      WHERE p.member = m.member AND p.status = 'active' AND p.made < b.period_end)
      AS last_care_plan,
    b.period_end
  FROM members m CROSS JOIN bounds b
)
SELECT x.member, x.care_manager, x.tier AS acuity_tier,
  to_char(x.enrolled_from AT TIME ZONE :tz, 'YYYY-MM-DD') AS enrolled,
  to_char(x.last_assessment AT TIME ZONE :tz, 'YYYY-MM-DD') AS last_assessment,
  COALESCE(x.last_assessment >= x.period_end - make_interval(days => :assessment_days), false)
    AS current_assessment,
  to_char(x.last_care_plan AT TIME ZONE :tz, 'YYYY-MM-DD') AS last_care_plan,
  COALESCE(x.last_care_plan >= x.period_end - make_interval(days => :care_plan_days), false)
    AS current_care_plan,
  (x.first_assessment AT TIME ZONE :tz)::date - (x.enrolled_from AT TIME ZONE :tz)::date
    AS days_to_assessment,
  (SELECT (min(p.made) AT TIME ZONE :tz)::date FROM plans p
    WHERE p.member = x.member AND p.made >= x.first_assessment)
    - (x.first_assessment AT TIME ZONE :tz)::date AS days_to_care_plan
FROM measured x ORDER BY x.member
"""
)

# Each discharge in the period (an Encounter of an inpatient, emergency or observation
# class whose period ended in it) of a member enrolled that month, and the first qualifying
# contact after it.
_TIMELINESS_DISCHARGES = (
    _BASE
    + f"""
, discharges AS (
  SELECT e.id AS encounter, e.patient_id AS member,
         {_instant("e.content->'period'->>'end'")} AS discharged
  FROM resource e
  JOIN idx_token k ON k.rid = e.rid AND k.resource_type = 'Encounter' AND k.param = 'class'
       AND k.system = :class_system AND k.code = ANY(CAST(:classes AS text[]))
  WHERE e.resource_type = 'Encounter' AND NOT e.deleted AND {_visible("e")}
    AND e.patient_id IN (SELECT member FROM scoped)
    AND e.content->>'status' = 'finished' AND e.content->'period'->>'end' IS NOT NULL
)
SELECT d.member, d.encounter, s.care_manager, s.tier AS acuity_tier,
  to_char(d.discharged AT TIME ZONE :tz, 'YYYY-MM-DD') AS discharged,
  to_char(f.first_contact AT TIME ZONE :tz, 'YYYY-MM-DD') AS follow_up,
  (f.first_contact AT TIME ZONE :tz)::date - (d.discharged AT TIME ZONE :tz)::date
    AS days_to_follow_up
FROM discharges d
JOIN scoped s ON s.member = d.member AND d.discharged >= s.month_start
     AND d.discharged < s.month_end
CROSS JOIN LATERAL (
  SELECT min(c.sent) AS first_contact FROM contacts c
  WHERE c.member = d.member AND c.sent >= d.discharged) f
ORDER BY d.discharged, d.member
"""
)

# DetectedIssues of the care-gap rules for members in scope at the period's end, open at
# some time in the period: by rule, gap status and the member's care manager.
_GAPS = (
    _BASE
    + f"""
, members AS (SELECT * FROM scoped WHERE month = {_LAST_MONTH}),
issues AS (
  SELECT d.id, d.patient_id AS member,
    (SELECT c->>'code' FROM jsonb_array_elements(COALESCE(d.content->'code'->'coding',
        '[]'::jsonb)) c WHERE c->>'system' = :gap_system LIMIT 1) AS rule,
    (SELECT x->'valueCodeableConcept'->'coding'->0->>'code'
       FROM jsonb_array_elements(COALESCE(d.content->'modifierExtension', '[]'::jsonb)) x
       WHERE x->>'url' = :gap_status_url LIMIT 1) AS status,
    {_instant("d.content->>'identifiedDateTime'")} AS identified,
    (SELECT max({_instant("g->>'date'")}) FROM jsonb_array_elements(
        COALESCE(d.content->'mitigation', '[]'::jsonb)) g WHERE g->>'date' IS NOT NULL)
      AS closed
  FROM resource d
  WHERE d.resource_type = 'DetectedIssue' AND NOT d.deleted AND {_visible("d")}
    AND d.patient_id IN (SELECT member FROM members)
    AND d.content->>'identifiedDateTime' IS NOT NULL
)
SELECT i.rule, i.status AS gap_status, m.care_manager, count(*) AS count,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY
    EXTRACT(epoch FROM i.closed - i.identified) / 86400.0)
    FILTER (WHERE i.status = 'closed-gap' AND i.closed IS NOT NULL) AS median_days_to_close
FROM issues i JOIN members m ON m.member = i.member CROSS JOIN bounds b
WHERE i.rule IS NOT NULL AND i.identified < b.period_end
  AND (i.status <> 'closed-gap' OR i.closed IS NULL OR i.closed >= b.period_start)
GROUP BY i.rule, i.status, m.care_manager
ORDER BY i.rule, i.status, m.care_manager
"""
)

# Contact-satisfaction answers in the period, by the care manager of the member that month
# and item: the count and mean of numeric answers (integer, decimal, boolean as 1/0, or a
# coding whose code is a number). Free text never appears.
_EXPERIENCE = (
    _BASE
    + f"""
, responses AS (
  SELECT q.rid, q.patient_id AS member, {_instant("q.content->>'authored'")} AS authored,
         q.content
  FROM resource q
  JOIN idx_token s ON s.rid = q.rid AND s.resource_type = 'QuestionnaireResponse'
       AND s.param = 'status' AND s.code IN ('completed', 'amended')
  WHERE q.resource_type = 'QuestionnaireResponse' AND NOT q.deleted AND {_visible("q")}
    AND q.patient_id IN (SELECT member FROM scoped)
    AND split_part(q.content->>'questionnaire', '|', 1) = :experience_url
    AND q.content->>'authored' IS NOT NULL
),
answers AS (
  SELECT r.rid, s.care_manager, item->>'linkId' AS item,
    CASE
      WHEN answer ? 'valueInteger' THEN (answer->>'valueInteger')::numeric
      WHEN answer ? 'valueDecimal' THEN (answer->>'valueDecimal')::numeric
      WHEN answer ? 'valueBoolean' THEN CASE WHEN (answer->>'valueBoolean')::boolean
                                              THEN 1 ELSE 0 END
      WHEN answer->'valueCoding'->>'code' ~ '^[0-9]+(\\.[0-9]+)?$'
        THEN (answer->'valueCoding'->>'code')::numeric
    END AS value
  FROM responses r
  JOIN scoped s ON s.member = r.member AND r.authored >= s.month_start
       AND r.authored < s.month_end
  CROSS JOIN LATERAL jsonb_path_query(r.content, 'lax $.**.item[*] ? (exists(@.answer))') AS item
  CROSS JOIN LATERAL jsonb_array_elements(item->'answer') AS answer
)
SELECT care_manager, item, count(DISTINCT rid) AS responses, avg(value) AS mean
FROM answers WHERE value IS NOT NULL
GROUP BY care_manager, item ORDER BY care_manager, item
"""
)

REPORT_SQL: Mapping[str, Mapping[str, str]] = {
    "caseload": {"rows": _CASELOAD},
    "contact-compliance": {"rows": _CONTACT_COMPLIANCE},
    "timeliness": {"rows": _TIMELINESS_MEMBERS, "discharges": _TIMELINESS_DISCHARGES},
    "gaps": {"rows": _GAPS},
    "member-experience": {"rows": _EXPERIENCE},
    "tcm-encounters": {"rows": _TCM_ENCOUNTERS},
}


async def fetch_report(
    repo: Repository, name: str, parameters: Mapping[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """The row sets of report `name`, each a list of column → value, from one snapshot,
    counting only what the repository's principal may see (None: nothing)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for part, sql in REPORT_SQL[name].items():
        # Narrowed to what the transaction's principal may see (the module docstring).
        statement = _narrowed(sql, repo.principal)
        wanted = {k: v for k, v in parameters.items() if f":{k}" in sql}
        result = await repo.conn.execute(statement, wanted)
        found[part] = [dict(row._mapping) for row in result]
    return found
