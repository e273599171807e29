"""Alembic environment: runs on the connection the caller hands over (see engine.store.migrate)."""

from __future__ import annotations

from alembic import context

from engine.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through engine.store.migrate(), which passes a connection")
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
