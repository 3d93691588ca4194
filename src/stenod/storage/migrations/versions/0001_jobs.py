"""jobs and workers tables

Revision ID: 0001_jobs
Revises:
Create Date: 2026-12-03

Columns are spelled out here (not imported from stenod.storage.sql) so this revision keeps
creating exactly this schema when the table definitions move on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("completed_at", sa.Float),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("published_at", sa.Float),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("duration", sa.Float),
        sa.Column("error_message", sa.Text),
        sa.Column("error_code", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("audio_key", sa.String(256)),
        sa.Column("result_key", sa.String(256)),
        sa.Column("idempotency_key", sa.String(256)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_status", sa.String(16)),
        sa.Column("webhook_attempts", sa.Text, nullable=False, server_default="[]"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("worker_id", sa.String(256)),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires_at", sa.Float),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
    )
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant_id", "created_at", "id"])
    op.create_index("ix_jobs_status_created", "jobs", ["status", "created_at"])
    op.create_index("ix_jobs_expires", "jobs", ["expires_at"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("hostname", sa.String(256), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("seen_at", sa.Float, nullable=False),
        sa.Column("running", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_jobs_expires", "jobs")
    op.drop_index("ix_jobs_status_created", "jobs")
    op.drop_index("ix_jobs_tenant_created", "jobs")
    op.drop_table("jobs")
