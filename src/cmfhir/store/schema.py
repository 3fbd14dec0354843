"""The database schema: current versions, history, one index table per search-parameter
type, and the event outbox. Every row that belongs to a member carries `patient_id` (the
Patient compartment) so the schema can be distributed by it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "INDEX_TABLES",
    "consumer",
    "event",
    "event_pruned",
    "export_job",
    "gap_member",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_string",
    "idx_token",
    "idx_uri",
    "import_job",
    "metadata",
    "resource",
    "resource_history",
    "worker_schedule",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)

resource = Table(
    "resource",
    metadata,
    Column("rid", BigInteger, Identity(), primary_key=True),
    Column("resource_type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", TS, nullable=False),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("patient_id", Text),
    # The current version as served (id and meta included); null once deleted.
    Column("content", JSONB),
    UniqueConstraint("resource_type", "id"),
    Index(None, "resource_type", "last_updated", "rid"),
    Index(None, "patient_id"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("rid", BigInteger, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("resource_type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("last_updated", TS, nullable=False),
    Column("method", Text, nullable=False),
    Column("patient_id", Text),
    Column("content", JSONB),
    Index(None, "resource_type", "id"),
    Index(None, "resource_type", "last_updated"),
    Index(None, "last_updated"),
)


def _index_table(
    name: str, *columns: Column[object], indexes: tuple[tuple[str, ...], ...]
) -> Table:
    return Table(
        name,
        metadata,
        Column("rid", BigInteger, nullable=False),
        Column("resource_type", Text, nullable=False),
        Column("param", Text, nullable=False),
        *columns,
        # The repetition a composite parameter's component row comes from (store/indexing.py).
        Column("grp", Integer),
        Index(None, "rid"),
        *(Index(None, "resource_type", "param", *cols) for cols in indexes),
    )


idx_token = _index_table(
    "idx_token",
    Column("system", Text),
    Column("code", Text),
    Column("text", Text),
    indexes=(("system",),),
)
idx_string = _index_table(
    "idx_string",
    Column("value", Text, nullable=False),  # normalized: lower case, no accents
    Column("exact", Text, nullable=False),
    indexes=(("exact",),),
)
idx_date = _index_table(
    "idx_date",
    Column("low", TS, nullable=False),
    Column("high", TS, nullable=False),  # exclusive
    indexes=(("low", "high"), ("high",)),
)
idx_number = _index_table(
    "idx_number",
    Column("value", Numeric),  # null for a Range
    Column("low", Numeric, nullable=False),
    Column("high", Numeric, nullable=False),
    indexes=(("value",), ("low", "high")),
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", Text),
    Column("code", Text),
    Column("unit", Text),
    Column("value", Numeric),  # null for a Range
    Column("low", Numeric, nullable=False),
    Column("high", Numeric, nullable=False),
    indexes=(("value",), ("code", "value"), ("code", "low", "high")),
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", Text),
    Column("target_id", Text),
    Column("url", Text, nullable=False),
    indexes=(("target_id", "target_type", "rid"), ("url",)),
)
idx_uri = _index_table(
    "idx_uri",
    Column("uri", Text, nullable=False),
    indexes=(("uri",),),
)
# Starts-with and contains on normalized strings: btree with text_pattern_ops and trigram
# would be the next step; text_pattern_ops serves the default (prefix) string search.
Index(
    "ix_idx_string_resource_type_param_value",
    idx_string.c.resource_type,
    idx_string.c.param,
    idx_string.c.value,
    postgresql_ops={"value": "text_pattern_ops"},
)

# The rows of one code come out in rid order, with the system at hand for an index-only
# scan (search_sql.py picks a page's rids from them). `system` is not a key column: a probe
# by code and rid (`code = 'noshow' AND rid = r.rid`) must not scan every system's rows.
Index(
    "ix_idx_token_resource_type_param_code_rid",
    idx_token.c.resource_type,
    idx_token.c.param,
    idx_token.c.code,
    idx_token.c.rid,
    postgresql_include=["system"],
)

# Reverse lookups (_revinclude, _has, compartment) go from the target to the source.
Index("ix_idx_reference_target", idx_reference.c.target_type, idx_reference.c.target_id)

# The outbox. Consumers read it in the order of `(xid, seq)`, and only below the oldest
# transaction id still running (store/outbox.py): a long transaction's events can then
# never land behind a position a consumer has already passed.
event = Table(
    "event",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("rid", BigInteger, nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("method", Text, nullable=False),
    # The member this change concerns: the new version's Patient compartment, or for a
    # delete the compartment the resource left.
    Column("patient_id", Text),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    # The writing transaction's id (xid8, epoch included, as a number).
    Column(
        "xid",
        BigInteger,
        nullable=False,
        server_default=text("(pg_current_xact_id())::text::bigint"),
    ),
    # The member of the previous version when the change moved the resource to another
    # one (or out of any); null when it stayed where it was.
    Column("previous_patient_id", Text),
    # Who wrote it, when a worker marked its transaction (store/consumers.py `mark_origin`):
    # a consumer skips its own writes. Null for clients.
    Column(
        "origin", Text, server_default=text("nullif(current_setting('cmfhir.origin', true), '')")
    ),
    Index(None, "xid", "seq"),
)

# The outbox consumers (store/consumers.py): each one's position, the pruning runs, the
# scheduled jobs' last runs, and the gap engine's queue of members to evaluate.
consumer = Table(
    "consumer",
    metadata,
    Column("name", Text, primary_key=True),
    Column("xid", BigInteger, nullable=False, server_default=text("0")),
    Column("seq", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", TS, nullable=False, server_default=text("now()")),
)
event_pruned = Table(
    "event_pruned",
    metadata,
    Column("run", BigInteger, Identity(), primary_key=True),
    Column("pruned_at", TS, nullable=False, server_default=text("now()")),
    # Events of versions stamped before this instant (and passed by every consumer) were
    # deleted: `cmfhir check` counts such a version without its event as pruned.
    Column("before", TS, nullable=False),
    Column("count", BigInteger, nullable=False),
)
worker_schedule = Table(
    "worker_schedule",
    metadata,
    Column("name", Text, primary_key=True),
    Column("last_run", TS),
)
gap_member = Table(
    "gap_member",
    metadata,
    Column("patient_id", Text, primary_key=True),
    Column("due_at", TS, nullable=False, server_default=text("now()")),
    # The instant to evaluate at (a sweep run with --as-of); null: now.
    Column("as_of", TS),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Queued by a sweep (not by a change): taken after the members a change queued.
    Column("sweep", Boolean, nullable=False, server_default=text("false")),
    # Moved on every queueing: an evaluation removes the member only if it did not move.
    Column("generation", BigInteger, nullable=False, server_default=text("0")),
    # Until when an evaluator has it (store/gap_queue.py `claim`).
    Column("leased_until", TS),
    Index(None, "sweep", "due_at"),
)

# Bulk Data export jobs (migration 0009_exchange, store/export_jobs.py).
export_job = Table(
    "export_job",
    metadata,
    Column("id", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("principal", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("lease_until", TS),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("progress", Text),
    Column("transaction_time", TS),
    Column("manifest", JSONB),
    Column("error", Text),
    Column("expires_at", TS),
    Index(None, "status", "created_at"),
)

# `$import` jobs (migration 0011_import_job): export_job's columns and the resume state.
import_job = Table(
    "import_job",
    metadata,
    Column("id", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("request", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("principal", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("lease_until", TS),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("progress", Text),
    Column("transaction_time", TS),
    Column("manifest", JSONB),
    Column("error", Text),
    Column("expires_at", TS),
    Column("state", JSONB),
    Index(None, "status", "created_at"),
)

INDEX_TABLES = {
    "token": idx_token,
    "string": idx_string,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "reference": idx_reference,
    "uri": idx_uri,
}
