"""Runs: one row per attempt of a run (training now, evaluation later), out of the jobs table.

Each job that was ever started gets a run row for its latest attempt, carrying what the jobs table held
for it (launcher ref, token hash, heartbeat, the base of its pace; step and total steps stay the job's
progress). A running or pausing job's trainer keeps its token; an ended attempt gets its end time and the
reason its job's status and error code tell. Then those columns leave the jobs table.

SQLite drops the columns in place (ALTER TABLE ... DROP COLUMN, SQLite 3.35+): recreating the jobs
table, as batch mode does by default, would drop it, and with foreign keys on that deletes every
job's events, metrics and checkpoints through their ON DELETE CASCADE.

Revision ID: 0003_runs
Revises: 0002
Create Date: 2026-12-02
"""

import secrets
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003_runs"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOVED = ("launcher_ref", "token_hash", "last_heartbeat_at", "run_start_step", "run_start_at")
ACTIVE = ("running", "pausing")
END_OF_STATUS = {"succeeded": "Succeeded", "cancelled": "Cancelled", "paused": "Terminated"}
END_OF_ERROR_CODE = {
    "lost": "Lost",
    "oomkilled": "OOMKilled",
    "outofmemory": "OutOfMemory",
    "unschedulable": "Unschedulable",
    "imagepullbackoff": "ImagePullBackOff",
    "crashloopbackoff": "CrashLoopBackOff",
    "deadlineexceeded": "DeadlineExceeded",
    "badinput": "BadInput",
    "invaliddata": "InvalidData",
    "infrastructure": "Infrastructure",
    "terminated": "Terminated",
    "launch_failed": "LaunchFailed",
    "trainer_silent": "TrainerSilent",
    "max_runtime_exceeded": "MaxRuntimeExceeded",
}
"""The run end reasons (`RunEndReason` values as of this revision) a failed job's error code names;
any other code is filed under "Failed"."""

jobs = sa.table(
    "jobs",
    sa.column("id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("attempt", sa.Integer()),
    sa.column("error", sa.JSON()),
    sa.column("created_at", sa.BigInteger()),
    sa.column("started_at", sa.BigInteger()),
    sa.column("finished_at", sa.BigInteger()),
    sa.column("updated_at", sa.BigInteger()),
    sa.column("step", sa.Integer()),
    sa.column("total_steps", sa.Integer()),
    *(sa.column(name) for name in MOVED),
)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=True),
        sa.Column("eval_run_id", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("launcher_ref", sa.String(), nullable=True),
        sa.Column("token_hash", sa.String(), nullable=True),
        sa.Column("last_heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.Column("logs_key", sa.String(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("run_start_step", sa.Integer(), nullable=True),
        sa.Column("run_start_at", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_runs_job_id_jobs", ondelete="CASCADE"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_runs_job_id_attempt"),
    )
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_index("ix_runs_eval_run_id", "runs", ["eval_run_id"])

    connection = op.get_bind()
    started = connection.execute(sa.select(jobs).where(jobs.c.attempt > 0)).mappings().all()
    rows = [_run_of(job) for job in started]
    if rows:
        connection.execute(sa.table("runs", *(sa.column(name) for name in rows[0])).insert(), rows)

    with op.batch_alter_table("jobs", recreate="never") as batch:
        for name in MOVED:
            batch.drop_column(name)


def _run_of(job: Any) -> dict[str, Any]:
    """The run row of a job's latest attempt, from the job's columns."""
    active = job["status"] in ACTIVE
    if active:
        end_reason = None
    elif job["status"] == "failed":
        code = (job["error"] or {}).get("code")
        end_reason = END_OF_ERROR_CODE.get(str(code), "Failed")
    else:
        end_reason = END_OF_STATUS.get(job["status"], "Failed")
    return {
        "id": f"run-{secrets.token_hex(12)}",
        "kind": "train",
        "job_id": job["id"],
        "eval_run_id": None,
        "attempt": job["attempt"],
        "launcher_ref": job["launcher_ref"],
        "token_hash": job["token_hash"] if active else None,
        "last_heartbeat_at": job["last_heartbeat_at"],
        "exit_code": None,
        "end_reason": end_reason,
        "logs_key": None,
        "step": job["step"],
        "total_steps": job["total_steps"],
        "run_start_step": job["run_start_step"],
        "run_start_at": job["run_start_at"],
        "started_at": job["started_at"] or job["created_at"],
        "ended_at": None if active else (job["finished_at"] or job["updated_at"]),
    }


def downgrade() -> None:
    """The latest run's columns go back onto its job; earlier attempts' rows are lost."""
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.add_column(sa.Column("launcher_ref", sa.String(), nullable=True))
        batch.add_column(sa.Column("token_hash", sa.String(), nullable=True))
        batch.add_column(sa.Column("last_heartbeat_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("run_start_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("run_start_at", sa.BigInteger(), nullable=True))
    runs = sa.table("runs", sa.column("job_id"), sa.column("attempt"), *(sa.column(name) for name in MOVED))
    latest = (runs.c.job_id == jobs.c.id) & (runs.c.attempt == jobs.c.attempt)
    op.execute(
        jobs.update().values(
            {name: sa.select(runs.c[name]).where(latest).scalar_subquery() for name in MOVED}
        )
    )
    op.drop_table("runs")
