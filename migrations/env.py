"""Alembic environment: runs on the connection cmfhir hands over (see store/database.py)."""

from alembic import context

from cmfhir.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `cmfhir migrate`, which supplies the connection")

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
