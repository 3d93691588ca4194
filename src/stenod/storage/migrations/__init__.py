"""Alembic migrations of the job store (run by :func:`stenod.storage.sql.migrate`)."""
