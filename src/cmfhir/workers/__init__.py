"""Background workers: outbox consumers and jobs claimed from PostgreSQL."""
