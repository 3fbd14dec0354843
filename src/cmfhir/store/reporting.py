"""The SQL of the care-management reports (reports/): computed in PostgreSQL over the index
tables, the stored versions and the reports' own narrow tables of contacts and care gaps
(store/report_tables.py), never by loading resources into Python.

Every report starts from the same member-months: for each month of the period, each member
with a TCM enrollment (an EpisodeOfCare of the configured program type) whose period
overlaps that month, in an enrolled status, as the enrollment was recorded last before the
month ended (`resource_history`), so a member who changed acuity tier or care manager counts
with what held at the month's end, and a month closed stays closed when the record changes
later. An enrollment recorded only after the month ended counts with its first version.
Months are calendar months in the configured time zone.

The scope (`organization`, `practitioner`, `group`) narrows the member-months: the
enrollment's managingOrganization, its careManager, or membership of the Group.

Every report reads only what the transaction's principal may count (store/report_access.py),
worked out once per run: a member-month is counted when the principal may see the member
now or the month's enrollment was theirs (their caseload or their supervised
organization's), and a resource row hidden from the principal (a sensitive label without
Consent, a granular scope's filter) is never counted. An unrestricted principal runs the SQL
unchanged.

Each report is one pass over the index tables with the period as range predicates: every
join is on the member (and month), never a subquery per row of another set, so the work
grows with the rows of the period, not with their square.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

from cmfhir.store.report_access import ReportAccess, report_access
from cmfhir.store.report_tables import (
    report_contact,
    report_enrollment,
    report_issue,
    report_record,
)
from cmfhir.store.repository import Repository

__all__ = ["MEASURE_SQL", "PAGED", "REPORT_SQL", "explain_report", "fetch_report"]


def _visible(alias: str) -> str:
    """Where the condition that the principal may see the resource row `alias` goes."""
    return f"__visible__({alias})"


def _visible_member(member: str, care_manager: str, organization: str, month_end: str) -> str:
    """Where the condition that the principal may count the member-month goes: the member
    `member`, enrolled that month under `care_manager` at `organization` (references), the
    month ending at `month_end`."""
    return f"__visible_member__({member}, {care_manager}, {organization}, {month_end})"


def _may_count(member: str, care_manager: str, organization: str) -> str:
    """Where a condition goes that holds for every member-month `_visible_member` admits
    and is worked out per enrollment version, without the month: the member is visible now,
    or on a CareTeam of the principal at some time, or the version names the principal as
    care manager or one of their supervised organizations. The member-months are expanded
    only for the members of which some version passes it (a care manager's caseload, not
    the whole organization's)."""
    return f"__may_count__({member}, {care_manager}, {organization})"


_VISIBLE = re.compile(r"__visible__\((\w+)\)")
_VISIBLE_MEMBER = re.compile(r"__visible_member__\(([^,()]+), ([^,()]+), ([^,()]+), ([^,()]+)\)")
_MAY_COUNT = re.compile(r"__may_count__\(([^,()]+), ([^,()]+), ([^,()]+)\)")


def _narrowed(sql: str, narrowed: bool) -> TextClause:
    """The report's SQL with the access conditions filled in (store/report_access.py)."""
    if not narrowed:
        return text(_VISIBLE.sub("TRUE", _VISIBLE_MEMBER.sub("TRUE", _MAY_COUNT.sub("TRUE", sql))))
    sql = _MAY_COUNT.sub(
        lambda m: (
            f"((({m[1]}) IN (SELECT unnest(CAST(:members_now AS text[])))"
            f" OR ({m[1]}) IN (SELECT unnest(CAST(:team_members AS text[])))"
            f" OR {m[2]} = CAST(:me AS text)"
            f" OR {m[3]} IN (SELECT unnest(CAST(:supervised AS text[]))))"
            f" AND ({m[1]}) NOT IN (SELECT unnest(CAST(:hidden_members AS text[]))))"
        ),
        sql,
    )
    sql = _VISIBLE_MEMBER.sub(
        lambda m: (
            f"((({m[1]}) IN (SELECT unnest(CAST(:members_now AS text[])))"
            f" OR {m[2]} = CAST(:me AS text)"
            f" OR {m[3]} IN (SELECT unnest(CAST(:supervised AS text[])))"
            f" OR EXISTS (SELECT 1 FROM unnest(CAST(:team_members AS text[]),"
            f" CAST(:team_from AS timestamptz[]), CAST(:team_until AS timestamptz[]))"
            f" AS t(member, valid_from, valid_until) WHERE t.member = ({m[1]})"
            f" AND (t.valid_from IS NULL OR t.valid_from < {m[4]})"
            f" AND (t.valid_until IS NULL OR t.valid_until >= {m[4]})))"
            f" AND ({m[1]}) NOT IN (SELECT unnest(CAST(:hidden_members AS text[]))))"
        ),
        sql,
    )
    sql = _VISIBLE.sub(
        lambda m: f"{m[1]}.rid NOT IN (SELECT unnest(CAST(:hidden_rids AS bigint[])))", sql
    )
    return text(sql)


def _instant(expr: str) -> str:
    """A FHIR date or dateTime (as text) as a timestamptz; partial dates start their
    year or month, dates without a time start their day in the report's time zone."""
    return (
        f"(CASE length({expr}) WHEN 4 THEN (({expr}) || '-01-01')::timestamp AT TIME ZONE :tz"
        f" WHEN 7 THEN (({expr}) || '-01')::timestamp AT TIME ZONE :tz"
        f" WHEN 10 THEN ({expr})::timestamp AT TIME ZONE :tz"
        f" ELSE ({expr})::timestamptz END)"
    )


def _extension(extensions: str, url_param: str, value: str) -> str:
    """The `value` of the first of the `extensions` (a JSON array, or null) whose url is
    `:url_param`."""
    return (
        f"(SELECT x->>'{value}' FROM jsonb_array_elements(COALESCE({extensions},"
        f" '[]'::jsonb)) x WHERE x->>'url' = :{url_param} LIMIT 1)"
    )


def _row(alias: str, resource_type: str, rid: str, where: str = "") -> str:
    """The current row `rid` of `resource_type` as `alias` (rid, id, patient_id, content),
    if not deleted and visible: a lateral lookup by primary key, so that the report reads
    only the rows its index-table scan found, whatever the join settings."""
    return (
        f"CROSS JOIN LATERAL (SELECT {alias}.rid, {alias}.id, {alias}.patient_id,"
        f" {alias}.content FROM resource {alias} WHERE {alias}.rid = {rid}"
        f" AND {alias}.resource_type = '{resource_type}' AND NOT {alias}.deleted"
        f" AND {_visible(alias)}{where} OFFSET 0) {alias}"
    )


def _month_of(instant: str) -> str:
    """The first day of the report month (in its time zone) of a timestamptz."""
    return f"date_trunc('month', ({instant}) AT TIME ZONE :tz)::date"


# Up to how many members in scope a report finds their rows by member (an index probe
# each) rather than reading every row of the period: about a care manager's caseload or a
# small organization's, far below where probing costs more than reading everything.
_FEW_MEMBERS = 1000


# The qualifying (in-person) medium codings as report_contact holds them: 'system|code'
# of the configured medium system. Computed once per statement.
_QUALIFYING = (
    "(SELECT array_agg(CAST(:medium_system AS text) || '|' || k)"
    " FROM unnest(CAST(:qualifying AS text[])) k)"
)
_IN_PERSON = (
    "(SELECT array_agg(CAST(:medium_system AS text) || '|' || k)"
    " FROM unnest(CAST(:in_person AS text[])) k WHERE k = ANY(CAST(:qualifying AS text[])))"
)


# A member among the member-months in scope, as a filter evaluated against one hashed set
# (not turned into a join): the distinct members (a tenth of a year's member-months), so
# that the set stays small enough for PostgreSQL to hash it at 10,000 members.
_IN_SCOPED = " AND COALESCE({member} IN (SELECT member FROM scoped_members), false)"
_IN_MEMBERS = " AND COALESCE({member} IN (SELECT member FROM members), false)"

# The member-months of the period in scope (see the module docstring). Each enrollment's
# versions carry the interval of month ends they hold for: a version holds from the time it
# was recorded (the first version: from always) until the next version was recorded.
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
  -- The enrollments' current rows are not read: their index rows exist only while the
  -- enrollment is not deleted, and its member is taken from its latest version.
  SELECT DISTINCT t.rid FROM idx_token t
  WHERE t.resource_type = 'EpisodeOfCare' AND t.param = 'type'
    AND t.system = :program_system AND t.code = :program_code AND {_visible("t")}
),
versions AS (
  -- Every version of each enrollment from its narrow row (report_enrollment, kept by a
  -- trigger on resource_history in the writing transaction: store/report_tables.py),
  -- never the stored version itself.
  SELECT h.rid AS episode, h.status, h.care_manager, h.organization, h.extension,
         h.period_start, h.period_end,
         last_value(h.member) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING
                                      AND UNBOUNDED FOLLOWING) AS member,
         CASE WHEN row_number() OVER w = 1 THEN '-infinity'::timestamptz
              ELSE h.recorded END AS valid_from,
         lead(h.recorded) OVER w AS valid_until
  FROM episodes e
  JOIN {report_enrollment.name} h ON h.rid = e.rid
  WINDOW w AS (PARTITION BY h.rid ORDER BY h.version)
),
extracted AS (
  -- What the reports read of each version, extracted once per version (not once per
  -- member-month: a year multiplies the versions by twelve).
  SELECT v.episode, v.member, v.valid_from, v.valid_until, v.status, v.care_manager,
         v.organization,
         COALESCE({_extension("v.extension", "tier_url", "valueCode")}, 'unknown') AS tier,
         {_extension("v.extension", "exclusion_url", "valueCodeableConcept")} AS exclusion,
         {_instant("v.period_start")} AS enrolled_from,
         CASE WHEN v.period_end IS NOT NULL THEN {_instant("v.period_end")} END
           AS enrolled_until
  FROM versions v
  WHERE v.member IS NOT NULL
    AND (v.valid_until IS NULL OR v.valid_until >= (SELECT min(month_end) FROM months))
),
dated AS MATERIALIZED (
  -- Only the members some version of whose enrollments could put a month in scope (the
  -- scope and the principal's access, without the month): a narrowed or scoped run
  -- expands the member-months of its members, not of every member. Every version of such
  -- a member stays (a transfer compares a member's enrollments in and out of scope).
  SELECT * FROM (
    SELECT x.*, bool_or(
        (CAST(:organization AS text) IS NULL
           OR x.organization = 'Organization/' || :organization)
        AND (CAST(:practitioner AS text) IS NULL
           OR x.care_manager = 'Practitioner/' || :practitioner)
        AND (CAST(:group AS text) IS NULL OR x.member IN (SELECT member FROM group_members))
        AND (CAST(:patient AS text) IS NULL OR x.member = :patient)
        AND {_may_count("x.member", "x.care_manager", "x.organization")}
      ) OVER (PARTITION BY x.member) AS wanted
    FROM extracted x) y
  WHERE y.wanted
),
recorded AS (
  SELECT v.episode, v.member, mo.month, mo.month_start, mo.month_end, v.status,
         v.care_manager, v.organization, v.tier, v.exclusion, v.enrolled_from,
         v.enrolled_until
  FROM dated v
  JOIN months mo ON v.valid_from < mo.month_end
       AND (v.valid_until IS NULL OR v.valid_until >= mo.month_end)
),
enrolled AS (
  SELECT DISTINCT ON (v.member, v.month)
         v.member, v.month, v.month_start, v.month_end, v.episode, v.care_manager,
         v.organization, v.tier, v.enrolled_from, v.enrolled_until
  FROM recorded v
  WHERE v.status = ANY(CAST(:statuses AS text[]))
    AND v.enrolled_from IS NOT NULL
    AND v.enrolled_from < v.month_end
    AND (v.enrolled_until IS NULL OR v.enrolled_until >= v.month_start)
  ORDER BY v.member, v.month, v.enrolled_from DESC
),
scoped AS MATERIALIZED (
  SELECT * FROM enrolled e
  WHERE (CAST(:organization AS text) IS NULL OR e.organization = 'Organization/' || :organization)
    AND (CAST(:practitioner AS text) IS NULL OR e.care_manager = 'Practitioner/' || :practitioner)
    AND (CAST(:group AS text) IS NULL OR e.member IN (SELECT member FROM group_members))
    AND (CAST(:patient AS text) IS NULL OR e.member = :patient)
    AND {_visible_member("e.member", "e.care_manager", "e.organization", "e.month_end")}
),
scoped_members AS MATERIALIZED (SELECT DISTINCT member FROM scoped),
few AS MATERIALIZED (
  -- The members in scope as one array when they are few (a care manager's caseload):
  -- their contacts are then found by member through the index (`few_contacts`), not by
  -- reading every contact of the period and keeping theirs (`all_contacts`). NULL: many.
  SELECT CASE WHEN count(*) <= {_FEW_MEMBERS} THEN array_agg(member) END AS members
  FROM scoped_members
),
contacts AS (
  -- One narrow row per Communication (report_contact, kept by a trigger in the writing
  -- transaction: store/report_tables.py), never the resource. Of the two branches only
  -- one runs: the other's condition on `few` is checked once, before it reads anything.
  SELECT c.rid, c.member, c.sent, {_month_of("c.sent")} AS month,
         c.mediums && {_IN_PERSON} AS in_person
  FROM {report_contact.name} c
  WHERE c.member = ANY(CAST((SELECT members FROM few) AS text[]))
    AND c.sent >= (SELECT period_start FROM bounds) AND c.sent < (SELECT period_end FROM bounds)
    AND c.status = 'completed' AND c.mediums && {_QUALIFYING}
    AND {_visible("c")}
  UNION ALL
  SELECT c.rid, c.member, c.sent, {_month_of("c.sent")},
         c.mediums && {_IN_PERSON}
  FROM {report_contact.name} c
  WHERE (SELECT members FROM few) IS NULL
    AND c.sent >= (SELECT period_start FROM bounds) AND c.sent < (SELECT period_end FROM bounds)
    AND c.status = 'completed' AND c.mediums && {_QUALIFYING}
    AND {_visible("c")} {_IN_SCOPED.format(member="c.member")}
),
monthly AS (
  SELECT c.member, c.month, count(*) AS contacts,
         count(*) FILTER (WHERE c.in_person) AS in_person, min(c.sent) AS first_contact
  FROM contacts c GROUP BY c.member, c.month
),
member_months AS (
  SELECT s.member, s.month, s.care_manager, s.organization, s.tier, s.episode,
         COALESCE(c.contacts, 0) AS contacts, COALESCE(c.in_person, 0) AS in_person,
         c.first_contact,
         (CAST(:requirements AS jsonb) ->> s.tier)::int AS required
  FROM scoped s
  LEFT JOIN monthly c ON c.member = s.member AND c.month = s.month
)
"""


def _last_month_only(sql: str) -> str:
    """`sql` (built on `_BASE`) expanding only the period's last month into member-months:
    for the reports that count members as they stand at the period's end (caseload, gaps,
    timeliness per member), a twelfth of a year's rows to sort and join. The period's
    bounds stay the whole period."""
    return sql.replace(
        "JOIN months mo ON", "JOIN (SELECT * FROM months ORDER BY month DESC LIMIT 1) mo ON", 1
    )


def _paged(detail: str, totals: str, columns: str, order: str) -> str:
    """The final statement of a report whose detail rows are many (one per member-month):
    its totals over every detail row, computed here, and one page of the rows
    (`:row_count` from `:row_offset`; a NULL count is every row). One row of totals (the
    aggregate of `totals`, prefixed `total_`) is joined with the page, so that the totals
    come even with an empty page; a row of the page has its first column non-null. The
    page is a nested loop's inner side under that one row: its rows come in its order.
    `detail` selects the detail rows from `member_months`; `columns` the page's columns
    from them (as `d`)."""
    return f"""
, detail AS MATERIALIZED ({detail})
SELECT p.*, t.* FROM ({totals}) t
LEFT JOIN LATERAL (
  SELECT {columns} FROM detail d ORDER BY {order}
  LIMIT CAST(:row_count AS bigint) OFFSET CAST(:row_offset AS bigint)) p ON true
"""


_COMPLIANCE_DETAIL = """
  SELECT member, month, care_manager, tier, contacts, in_person, COALESCE(required, 1) AS required,
         contacts >= COALESCE(required, 1) AS compliant
  FROM member_months"""

_CONTACT_COMPLIANCE = _BASE + _paged(
    detail=_COMPLIANCE_DETAIL,
    totals="""
  SELECT (SELECT count(*) FROM detail) AS total_member_months,
    (SELECT count(*) FROM detail WHERE compliant) AS total_member_months_compliant,
    (SELECT COALESCE(sum(contacts), 0)::bigint FROM detail) AS total_contacts,
    (SELECT COALESCE(sum(in_person), 0)::bigint FROM detail) AS total_in_person,
    count(*) AS total_members, count(*) FILTER (WHERE always) AS total_members_always
  FROM (SELECT bool_and(compliant) AS always FROM detail GROUP BY member) m""",
    columns="""d.member, to_char(d.month, 'YYYY-MM') AS month, d.care_manager,
         d.tier AS acuity_tier, d.contacts, d.in_person, d.required, d.compliant""",
    order="d.member, d.month",
)

# contact-compliance's MeasureReport counts members, not member-months
# (reports/measure.py): one row per member with the care manager and acuity tier of their
# last month in the period and whether they met the requirement in every month.
_COMPLIANCE_MEMBERS = (
    _BASE
    + f"""
, detail AS MATERIALIZED ({_COMPLIANCE_DETAIL})
SELECT DISTINCT ON (member) member, care_manager, tier AS acuity_tier,
       bool_and(compliant) OVER (PARTITION BY member) AS compliant
FROM detail ORDER BY member, month DESC
"""
)

# tcm-encounters' MeasureReport: the billable member-months by care manager and tier.
_TCM_COUNTS = (
    _BASE
    + """
SELECT care_manager, tier AS acuity_tier, count(*) AS count
FROM member_months WHERE contacts > 0 GROUP BY care_manager, tier ORDER BY 1, 2
"""
)

_TCM_ENCOUNTERS = (
    _BASE
    + f"""
, waiver AS (
  SELECT DISTINCT w.patient_id AS member
  FROM idx_token t
  {_row("w", "EpisodeOfCare", "t.rid")}
  WHERE t.resource_type = 'EpisodeOfCare' AND t.param = 'type'
    AND t.system = :waiver_system AND t.code = :waiver_code
    AND w.content->>'status' = ANY(CAST(:statuses AS text[]))
)"""
    + _paged(
        detail="""
  SELECT member, month, first_contact, care_manager, tier FROM member_months
  WHERE contacts > 0""",
        totals="SELECT count(*) AS total_member_months FROM detail",
        columns="""d.member, to_char(d.month, 'YYYY-MM') AS month,
         to_char(d.first_contact AT TIME ZONE :tz, 'YYYY-MM-DD') AS first_contact_date,
         d.care_manager, d.tier AS acuity_tier,
         d.member IN (SELECT member FROM waiver) AS waiver""",
        order="d.month, d.member",
    )
)

_SCOPE_OF = f"""(
  (CAST(:organization AS text) IS NULL OR {{o}} = 'Organization/' || :organization)
  AND (CAST(:practitioner AS text) IS NULL OR {{c}} = 'Practitioner/' || :practitioner)
  AND (CAST(:group AS text) IS NULL OR {{m}} IN (SELECT member FROM group_members))
  AND (CAST(:patient AS text) IS NULL OR {{m}} = :patient)
  AND {_visible_member("{m}", "{c}", "{o}", "{e}")}
)"""

_LAST_MONTH = "(SELECT max(month) FROM months)"

# Enrollment events: each enrollment as recorded at the period's end, in scope or not; an
# enrollment in scope that started (ended) in the period within 31 days of another of the
# member's ending (starting) outside the scope is a transfer in (out).
_CASELOAD = (
    _BASE
    + f"""
, latest AS MATERIALIZED (
  SELECT v.episode, v.member, v.enrolled_from, v.enrolled_until,
         {_SCOPE_OF.format(c="v.care_manager", o="v.organization", m="v.member", e="v.month_end")}
           AS in_scope,
         v.exclusion
  FROM recorded v
  WHERE v.month = {_LAST_MONTH} AND v.enrolled_from IS NOT NULL
),
outside AS (
  -- Beside each enrollment, the periods of the member's other enrollments out of scope
  -- (a member has a few: arrays per member, never a join of every enrollment with every
  -- other).
  SELECT l.*,
    array_agg(l.enrolled_from) FILTER (WHERE NOT l.in_scope) OVER (PARTITION BY l.member)
      AS others_from,
    array_agg(l.enrolled_until) FILTER (WHERE NOT l.in_scope) OVER (PARTITION BY l.member)
      AS others_until
  FROM latest l
),
moves AS (
  SELECT e.episode, e.member,
    EXISTS (SELECT 1 FROM unnest(e.others_until) o
            WHERE o BETWEEN e.enrolled_from - interval '31 days'
                        AND e.enrolled_from + interval '31 days') AS came_in,
    EXISTS (SELECT 1 FROM unnest(e.others_from) o
            WHERE o BETWEEN e.enrolled_until - interval '31 days'
                        AND e.enrolled_until + interval '31 days') AS went_out,
    e.enrolled_from >= b.period_start AND e.enrolled_from < b.period_end AS started,
    COALESCE(e.enrolled_until >= b.period_start AND e.enrolled_until < b.period_end,
             false) AS ended,
    e.exclusion
  FROM outside e CROSS JOIN bounds b
  WHERE e.in_scope
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
FROM scoped WHERE month = {_LAST_MONTH} GROUP BY care_manager, tier
UNION ALL
SELECT kind, NULL, NULL, reason, count(DISTINCT member) FROM events GROUP BY kind, reason
ORDER BY 1, 2, 3, 4
"""
)

# Responses to a Questionnaire (`:{url}`, the canonical without its version), completed or
# amended, of the members `{members}` keeps: from their narrow rows (report_record, kept by
# a trigger in the writing transaction: store/report_tables.py), never the resources.
_RESPONSES = f"""
  SELECT r.rid, r.member, {_instant("r.at")} AS authored
  FROM {report_record.name} r
  WHERE r.kind = 'QuestionnaireResponse' AND r.questionnaire = :{{url}}
    AND r.status IN ('completed', 'amended') AND r.at IS NOT NULL
    AND {_visible("r")}{{members}}
"""

# Per member in scope at the period's end: the latest completed comprehensive assessment
# and care plan, and the intervals from enrollment to the first assessment and from that
# assessment to the first care plan after it.
_TIMELINESS_MEMBERS = (
    _BASE
    + f"""
, members AS MATERIALIZED (SELECT * FROM scoped WHERE month = {_LAST_MONTH}),
assessments AS ({
        _RESPONSES.format(url="assessment_url", members=_IN_MEMBERS.format(member="r.member"))
    }),
plans AS (
  -- Care plans from their narrow rows (report_record): `at` is `created`, else
  -- `period.start`.
  SELECT p.member, p.status, {_instant("p.at")} AS made
  FROM {report_record.name} p
  WHERE p.kind = 'CarePlan' AND p.status IN ('active', 'completed') AND p.at IS NOT NULL
    AND {_visible("p")} {_IN_MEMBERS.format(member="p.member")}
),
measured AS (
  SELECT m.member, m.care_manager, m.tier, m.enrolled_from, b.period_end,
    max(a.authored) FILTER (WHERE a.authored < b.period_end) AS last_assessment,
    min(a.authored) FILTER (WHERE a.authored >= m.enrolled_from) AS first_assessment
  FROM members m CROSS JOIN bounds b
  LEFT JOIN assessments a ON a.member = m.member
  GROUP BY m.member, m.care_manager, m.tier, m.enrolled_from, b.period_end
),
planned AS (
  SELECT x.member,
    max(p.made) FILTER (WHERE p.status = 'active' AND p.made < x.period_end)
      AS last_care_plan,
    min(p.made) FILTER (WHERE p.made >= x.first_assessment) AS first_care_plan
  FROM measured x LEFT JOIN plans p ON p.member = x.member
  GROUP BY x.member
)
SELECT x.member, x.care_manager, x.tier AS acuity_tier,
  to_char(x.enrolled_from AT TIME ZONE :tz, 'YYYY-MM-DD') AS enrolled,
  to_char(x.last_assessment AT TIME ZONE :tz, 'YYYY-MM-DD') AS last_assessment,
  COALESCE(x.last_assessment >= x.period_end - make_interval(days => :assessment_days), false)
    AS current_assessment,
  to_char(y.last_care_plan AT TIME ZONE :tz, 'YYYY-MM-DD') AS last_care_plan,
  COALESCE(y.last_care_plan >= x.period_end - make_interval(days => :care_plan_days), false)
    AS current_care_plan,
  (x.first_assessment AT TIME ZONE :tz)::date - (x.enrolled_from AT TIME ZONE :tz)::date
    AS days_to_assessment,
  (y.first_care_plan AT TIME ZONE :tz)::date - (x.first_assessment AT TIME ZONE :tz)::date
    AS days_to_care_plan
FROM measured x JOIN planned y ON y.member = x.member ORDER BY x.member
"""
)

# Each discharge in the period (an Encounter of an inpatient, emergency or observation
# class whose period ended in it) of a member enrolled that month, and the first qualifying
# contact after it (in the period).
_TIMELINESS_DISCHARGES = (
    _BASE
    + f"""
, discharges AS (
  -- Encounters from their narrow rows (report_record): `at` is `period.end`, `codes` the
  -- class coding as 'system|code'.
  SELECT e.id AS encounter, e.member, {_instant("e.at")} AS discharged
  FROM {report_record.name} e
  WHERE e.kind = 'Encounter' AND e.status = 'finished' AND e.at IS NOT NULL
    AND e.codes && (SELECT array_agg(CAST(:class_system AS text) || '|' || k)
                    FROM unnest(CAST(:classes AS text[])) k)
    AND {_visible("e")} {_IN_SCOPED.format(member="e.member")}
),
followed AS (
  SELECT d.encounter, d.member, d.discharged, s.care_manager, s.tier
  FROM discharges d
  JOIN scoped s ON s.member = d.member AND d.discharged >= s.month_start
       AND d.discharged < s.month_end
)
SELECT f.member, f.encounter, f.care_manager, f.tier AS acuity_tier,
  to_char(f.discharged AT TIME ZONE :tz, 'YYYY-MM-DD') AS discharged,
  to_char(c.first_contact AT TIME ZONE :tz, 'YYYY-MM-DD') AS follow_up,
  (c.first_contact AT TIME ZONE :tz)::date - (f.discharged AT TIME ZONE :tz)::date
    AS days_to_follow_up
FROM followed f
-- The first qualifying contact after each discharge, in the period: found by member and
-- time through report_contact's (member, sent) index, one probe per discharge, rather
-- than by reading every contact of the period.
LEFT JOIN LATERAL (
  SELECT min(c.sent) AS first_contact FROM {report_contact.name} c
  WHERE c.member = f.member AND c.sent >= f.discharged
    AND c.sent < (SELECT period_end FROM bounds)
    AND c.status = 'completed' AND c.mediums && {_QUALIFYING} AND {_visible("c")}
) c ON true
ORDER BY f.discharged, f.member
"""
)

# DetectedIssues of the care-gap rules for members in scope at the period's end, open at
# some time in the period: by rule, gap status and the member's care manager.
_GAPS = (
    _BASE
    + f"""
, members AS MATERIALIZED (SELECT * FROM scoped WHERE month = {_LAST_MONTH}),
issues AS (
  -- One narrow row per DetectedIssue (report_issue, kept by a trigger in the writing
  -- transaction: store/report_tables.py), never the resource: the rule is its first code
  -- of the gap system, the gap status the first of its gapStatus modifier extension.
  SELECT g.rid, g.member,
    (SELECT substr(c, length(CAST(:gap_system AS text)) + 2)
       FROM unnest(g.codes) WITH ORDINALITY AS u(c, n)
       WHERE left(c, length(CAST(:gap_system AS text)) + 1) = :gap_system || '|'
       ORDER BY n LIMIT 1) AS rule,
    (SELECT substr(x, length(CAST(:gap_status_url AS text)) + 2)
       FROM unnest(g.modifiers) WITH ORDINALITY AS u(x, n)
       WHERE left(x, length(CAST(:gap_status_url AS text)) + 1) = :gap_status_url || '|'
       ORDER BY n LIMIT 1) AS status,
    {_instant("g.identified")} AS identified,
    (SELECT max({_instant("x")}) FROM unnest(g.mitigated) x) AS closed
  FROM {report_issue.name} g
  WHERE {_visible("g")} {_IN_MEMBERS.format(member="g.member")}
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
, responses AS ({
        _RESPONSES.format(url="experience_url", members=_IN_SCOPED.format(member="r.member"))
    }),
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
  JOIN scoped s ON s.member = r.member AND s.month = {_month_of("r.authored")}
  -- The content of only the responses of the period's member-months, by key.
  CROSS JOIN LATERAL (SELECT q.content FROM resource q
                      WHERE q.rid = r.rid AND q.resource_type = 'QuestionnaireResponse'
                      OFFSET 0) q
  CROSS JOIN LATERAL jsonb_path_query(q.content, 'lax $.**.item[*] ? (exists(@.answer))') AS item
  CROSS JOIN LATERAL jsonb_array_elements(item->'answer') AS answer
)
SELECT care_manager, item, count(DISTINCT rid) AS responses, avg(value) AS mean
FROM answers WHERE value IS NOT NULL
GROUP BY care_manager, item ORDER BY care_manager, item
"""
)

# The reports whose MeasureReport is built from rows of its own (`fetch_report(measure=
# True)`), fewer than the report's member-months: contact-compliance's per member
# (member, care_manager, acuity_tier, compliant), tcm-encounters' counts by care manager
# and acuity tier (care_manager, acuity_tier, count).
MEASURE_SQL: Mapping[str, str] = {
    "contact-compliance": _COMPLIANCE_MEMBERS,
    "tcm-encounters": _TCM_COUNTS,
}

# The reports whose rows (one per member-month) are computed with their totals in SQL and
# returned a page at a time (`:row_count` rows from `:row_offset`): `fetch_report` gives
# their totals as the part `rows_totals`.
PAGED = frozenset({"contact-compliance", "tcm-encounters"})

REPORT_SQL: Mapping[str, Mapping[str, str]] = {
    "caseload": {"rows": _last_month_only(_CASELOAD)},
    "contact-compliance": {"rows": _CONTACT_COMPLIANCE},
    "timeliness": {
        "rows": _last_month_only(_TIMELINESS_MEMBERS),
        "discharges": _TIMELINESS_DISCHARGES,
    },
    "gaps": {"rows": _last_month_only(_GAPS)},
    "member-experience": {"rows": _EXPERIENCE},
    "tcm-encounters": {"rows": _TCM_ENCOUNTERS},
}


async def _statements(
    repo: Repository,
    name: str,
    parameters: Mapping[str, Any],
    types: Iterable[str],
    measure: bool = False,
) -> list[tuple[str, TextClause, dict[str, Any]]]:
    """Each part of report `name` (`measure`: its MeasureReport's rows, MEASURE_SQL) as a
    statement and its parameters, narrowed to what the repository's principal may count
    (worked out once for the run)."""
    access: ReportAccess | None = await report_access(repo.conn, repo.principal, types)
    # Every join of a report is between whole sets of the period (member-months, contacts,
    # responses): hashed, each set read once. PostgreSQL's estimates of the CTEs' rows
    # (after the month-range join and DISTINCT ON) are far too low (1 for tens of
    # thousands), and a nested loop over a CTE re-reads it for every outer row: quadratic.
    # The lookups by primary key stay nested loops (they are lateral: the setting cannot
    # turn them into hash joins over `resource`; no plan scans `resource`). The member-month
    # sort and hashes of a year at 10,000 members (120,000 rows) need more than the default
    # 4 MB to stay in memory. Set after the access queries, for the report's statements
    # only (the rest of this read-only, report-only transaction).
    await repo.conn.execute(text("SET LOCAL enable_nestloop = off"))
    await repo.conn.execute(text("SET LOCAL work_mem = '32MB'"))
    # Grouping by hashing, not by sorting, where PostgreSQL has the choice: counting a
    # year's 218,000 contacts per member and month at 10,000 members by a sort took twice
    # as long as by a hash (the sorts a result needs, DISTINCT ON, ORDER BY, windows, stay).
    await repo.conn.execute(text("SET LOCAL enable_sort = off"))
    given = dict(parameters) | (access.parameters() if access is not None else {})
    out = []
    parts = {"rows": MEASURE_SQL[name]} if measure else REPORT_SQL[name]
    for part, sql in parts.items():
        statement = _narrowed(sql, access is not None)
        wanted = {k: v for k, v in given.items() if f":{k}" in statement.text}
        out.append((part, statement, wanted))
    return out


async def fetch_report(
    repo: Repository,
    name: str,
    parameters: Mapping[str, Any],
    types: Iterable[str],
    measure: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """The row sets of report `name` (reading resources of `types`), each a list of
    column → value, from one snapshot, counting only what the repository's principal may
    (None: nothing)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for part, statement, wanted in await _statements(repo, name, parameters, types, measure):
        result = await repo.conn.execute(statement, wanted)
        if name in PAGED and not measure:
            found[f"{part}_totals"], found[part] = _split_totals(list(result.keys()), result)
        else:
            found[part] = [dict(row._mapping) for row in result]
    return found


def _split_totals(
    keys: list[str], rows: Iterable[Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A paged report's result (`_paged`): its totals (one row, without the `total_`
    prefix; none without a row) and its page's rows (without the totals), each built once
    from the row's values."""
    own = [(i, k) for i, k in enumerate(keys) if not k.startswith("total_")]
    first = own[0][0]
    totals: list[dict[str, Any]] = []
    page = []
    for row in rows:
        if not totals:
            totals.append(
                {
                    k.removeprefix("total_"): row[i]
                    for i, k in enumerate(keys)
                    if k.startswith("total_")
                }
            )
        if row[first] is not None:
            page.append({k: row[i] for i, k in own})
    return totals, page


async def explain_report(
    repo: Repository, name: str, parameters: Mapping[str, Any], types: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """PostgreSQL's EXPLAIN (ANALYZE) of each part of report `name`: planning and
    execution time in milliseconds, and the plan (bench/report_explain.py)."""
    found: dict[str, dict[str, Any]] = {}
    for part, statement, wanted in await _statements(repo, name, parameters, types):
        explained = text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.text)
        result = await repo.conn.execute(explained, wanted)
        explained_plan = result.scalar_one()
        if isinstance(explained_plan, str):
            explained_plan = json.loads(explained_plan)
        plan = explained_plan[0]
        found[part] = {
            "planning_ms": plan["Planning Time"],
            "execution_ms": plan["Execution Time"],
            "plan": plan["Plan"],
        }
    return found
