"""Alembic environment: always run on the connection :func:`stenod.storage.sql.migrate` passes in
(it holds the migration lock), never from alembic.ini."""

from __future__ import annotations

from alembic import context

from stenod.storage.sql import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through stenod (stenod.storage.sql.migrate), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things in place
)
with context.begin_transaction():
    context.run_migrations()
