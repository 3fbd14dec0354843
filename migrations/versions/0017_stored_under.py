"""stored under: a parameter that is the union of others has no index rows of its own

A search parameter whose expression is the union of other parameters' expressions of its
type, read and converted alike (`SearchParameterRegistry.stored_under`), is searched in the
rows of those others: `combo-code` (`Observation.code | Observation.component.code`) in the
rows of `code` and `component-code`, the composite `combo-code-value-quantity` in the
groups of `code-value-quantity` and `component-code-value-quantity`, `phonetic` in those of
`name`. The write no longer stores them (a third of an Observation's index rows); this
deletes the rows stored so far, which the search no longer reads. `STORED_UNDER` is what the
core definitions give (tests/store/test_stored_under.py holds it to them); a deployment with
definitions of its own runs `cmfhir reindex` after it, as after any change of definitions
(`cmfhir check` lists the resources whose rows differ).

It also makes the report trigger's rows (migration 0012_report_totals) cheaper without
changing them: the member of a Communication or DetectedIssue was read with the pattern
`^Patient/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$`, which PostgreSQL's regular
expressions take about 0.5 ms to match with its capture (most of the trigger's cost, on
every Communication written); `report_member_of` reads the same id with string functions
(10 µs). And `sent` is checked with `pg_input_is_valid` instead of a cast inside an
EXCEPTION block (a subtransaction each). The rows stored, and those left out, are the same
for every content (bench/report_trigger_cost.py compares them; bench/README.md, "index5").

The downgrade copies the others' rows back under each parameter's own name (a composite's
groups keep the number of the group they copy: `cmfhir reindex` renumbers them).

Revision ID: 0017_stored_under
Revises: 0016_audit_event
Create Date: 2026-12-01 07:30:00
"""

from collections.abc import Sequence
from importlib import util
from pathlib import Path
from typing import Any

from alembic import op

revision: str = "0017_stored_under"
down_revision: str | None = "0016_audit_event"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (resource type, parameter, its type, the parameters its rows are) of the core definitions.
STORED_UNDER: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("CapabilityStatement", "version", "token", ("fhirversion",)),
    ("CodeSystem", "url", "uri", ("system",)),
    ("Observation", "gene-amino-acid-change", "string", ("amino-acid-change",)),
    ("Observation", "gene-dnavariant", "string", ("dna-variant",)),
    ("Observation", "combo-code", "token", ("code", "component-code")),
    (
        "Observation",
        "combo-code-value-concept",
        "token,token",
        ("code-value-concept", "component-code-value-concept"),
    ),
    (
        "Observation",
        "combo-code-value-quantity",
        "token,quantity",
        ("code-value-quantity", "component-code-value-quantity"),
    ),
    (
        "Observation",
        "combo-data-absent-reason",
        "token",
        ("data-absent-reason", "component-data-absent-reason"),
    ),
    ("Observation", "combo-value-concept", "token", ("value-concept", "component-value-concept")),
    (
        "Observation",
        "combo-value-quantity",
        "quantity",
        ("value-quantity", "component-value-quantity"),
    ),
    ("Patient", "phonetic", "string", ("name",)),
    ("Person", "phonetic", "string", ("name",)),
    ("Practitioner", "phonetic", "string", ("name",)),
    ("RelatedPerson", "phonetic", "string", ("name",)),
)

# The value columns of each index table (besides rid, resource_type, param and grp).
_COLUMNS = {
    "token": ("system", "code", "text"),
    "string": ("value", "exact"),
    "quantity": ("system", "code", "unit", "value", "low", "high"),
    "uri": ("uri",),
}


# The id of a local Patient reference (`Patient/x` or `Patient/x/_history/n`, the id at most
# 64 of [A-Za-z0-9.-]), else null: what 0012's pattern captured, without a regex capture.
_MEMBER_OF = r"""
CREATE FUNCTION report_member_of(reference text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  v_id text;
  v_tail text;
BEGIN
  IF reference IS NULL OR left(reference, 8) <> 'Patient/' THEN
    RETURN NULL;
  END IF;
  v_id := split_part(substr(reference, 9), '/', 1);
  IF length(v_id) NOT BETWEEN 1 AND 64 OR v_id ~ '[^A-Za-z0-9.-]' THEN
    RETURN NULL;
  END IF;
  v_tail := substr(reference, 9 + length(v_id));
  IF v_tail = '' OR (left(v_tail, 10) = '/_history/' AND length(v_tail) > 10
                     AND strpos(substr(v_tail, 11), '/') = 0) THEN
    RETURN v_id;
  END IF;
  RETURN NULL;
END $$
"""

# 0012's report_contact_put with the same row for every content: the member by
# report_member_of, and a `sent` PostgreSQL cannot read found by pg_input_is_valid
# (PostgreSQL 16's soft input errors) rather than by catching the cast's error.
_CONTACT_PUT = r"""
CREATE OR REPLACE FUNCTION report_contact_put(r_rid bigint, r_content jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  v_sent text := r_content->>'sent';
  v_member text;
  v_text text;
  medium jsonb;
  v_at timestamptz;
BEGIN
  IF v_sent IS NULL THEN
    RETURN;
  END IF;
  v_member := report_member_of(r_content->'subject'->>'reference');
  IF v_member IS NULL THEN
    RETURN;
  END IF;
  v_text := CASE
    WHEN v_sent ~ '^\d{4}$' THEN v_sent || '-01-01'
    WHEN v_sent ~ '^\d{4}-\d{2}$' THEN v_sent || '-01'
    ELSE v_sent
  END;
  IF v_sent ~ '^\d{4}(-\d{2}(-\d{2})?)?$' OR v_sent !~ '(Z|[+-]\d{2}:\d{2})$' THEN
    IF NOT pg_input_is_valid(v_text, 'timestamp') THEN
      RETURN;
    END IF;
    v_at := v_text::timestamp AT TIME ZONE 'UTC';
  ELSE
    IF NOT pg_input_is_valid(v_text, 'timestamptz') THEN
      RETURN;
    END IF;
    v_at := v_text::timestamptz;
  END IF;
  medium := r_content->'medium';
  INSERT INTO report_contact (rid, member, sent, status, mediums)
  VALUES (
    r_rid, v_member, v_at, r_content->>'status',
    ARRAY(
      SELECT DISTINCT COALESCE(c->>'system', '') || '|' || (c->>'code')
      FROM jsonb_array_elements(
             CASE WHEN jsonb_typeof(medium) = 'array' THEN medium ELSE '[]' END) m,
           jsonb_array_elements(
             CASE WHEN jsonb_typeof(m->'coding') = 'array' THEN m->'coding' ELSE '[]' END) c
      WHERE c->>'code' IS NOT NULL));
END $$
"""

_PATTERN = (
    "substring(r_content->'patient'->>'reference'\n"
    "                             FROM '^Patient/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$')"
)


def _report_totals() -> Any:
    """Migration 0012_report_totals' module (its functions' definitions)."""
    path = Path(__file__).with_name("0012_report_totals.py")
    spec = util.spec_from_file_location("report_totals_0012", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def issue_put() -> str:
    """0012's report_issue_put with its member read by report_member_of."""
    previous: str = _report_totals()._ISSUE
    assert _PATTERN in previous
    changed = previous.replace(_PATTERN, "report_member_of(r_content->'patient'->>'reference')")
    return changed.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _names(code: str, types: list[str]) -> list[tuple[str, str, int | None]]:
    """(index family, row name, component position) of a parameter's rows."""
    if len(types) == 1:
        return [(types[0], code, None)]
    return [(kind, f"{code}${j}", j) for j, kind in enumerate(types)]


def upgrade() -> None:
    op.execute(_MEMBER_OF)
    op.execute(_CONTACT_PUT)
    op.execute(issue_put())
    op.execute("SET LOCAL statement_timeout = 0")
    for resource_type, code, kinds, _ in STORED_UNDER:
        for kind, name, _ in _names(code, kinds.split(",")):
            op.execute(
                f"DELETE FROM idx_{kind} WHERE resource_type = {_q(resource_type)}"
                f" AND param = {_q(name)}"
            )


def downgrade() -> None:
    previous = _report_totals()
    for definition in (previous._PUT, previous._ISSUE):
        op.execute(definition.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP FUNCTION report_member_of(text)")
    op.execute("SET LOCAL statement_timeout = 0")
    for resource_type, code, kinds, under in STORED_UNDER:
        for kind, name, position in _names(code, kinds.split(",")):
            columns = ", ".join(_COLUMNS[kind])
            if position is None:
                sources = ", ".join(_q(u) for u in under)
                op.execute(
                    f"INSERT INTO idx_{kind} (rid, resource_type, param, grp, {columns})"
                    f" SELECT DISTINCT rid, resource_type, {_q(name)}, NULL::integer, {columns}"
                    f" FROM idx_{kind} WHERE resource_type = {_q(resource_type)}"
                    f" AND param IN ({sources}) AND grp IS NULL"
                )
            else:
                sources = ", ".join(_q(f"{u}${position}") for u in under)
                op.execute(
                    f"INSERT INTO idx_{kind} (rid, resource_type, param, grp, {columns})"
                    f" SELECT rid, resource_type, {_q(name)}, grp, {columns}"
                    f" FROM idx_{kind} WHERE resource_type = {_q(resource_type)}"
                    f" AND param IN ({sources})"
                )
