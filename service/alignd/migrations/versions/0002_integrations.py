"""Integrations: per-project credentials (sealed) and one mirrored run per job integration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "integration_credentials",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("sealed", sa.String(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_integration_credentials"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_integration_credentials_project_id_projects"
        ),
        sa.UniqueConstraint("project_id", "type", name="uq_integration_credentials_project_id_type"),
    )
    op.create_index("ix_integration_credentials_project_id", "integration_credentials", ["project_id"])

    op.create_table(
        "integration_runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("metric_cursor", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("lock_token", sa.String(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_integration_runs"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_integration_runs_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_integration_runs_job_id", "integration_runs", ["job_id"])
    op.create_index(
        "ix_integration_runs_status_next_attempt_at", "integration_runs", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("integration_runs")
    op.drop_table("integration_credentials")
