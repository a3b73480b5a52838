"""Rows for DB tests. Each call makes new, uniquely named rows, so tests share one database safely."""

import secrets
from typing import Any

from sqlmodel import Session

from alignd.jobs.lifecycle import RunKind
from alignd.jobs.state import JobStatus
from alignd.models import JobModel, ProjectModel, RunModel

RUN_FIELDS = frozenset({"launcher_ref", "token_hash", "last_heartbeat_at", "run_start_step", "run_start_at"})
"""Columns of a job's latest run that tests set as if they were the job's."""


def make_project(session: Session, **overrides: Any) -> ProjectModel:
    project = ProjectModel(name=f"project-{secrets.token_hex(4)}", **overrides)
    session.add(project)
    session.commit()
    return project


def make_job(
    session: Session,
    project: ProjectModel | None = None,
    *,
    status: JobStatus = JobStatus.queued,
    **overrides: Any,
) -> JobModel:
    """A job created directly in `status`: a test's starting point, not a status change (those go through
    `alignd.jobs.state.transition`). A running or pausing job, or one given a run's fields (`launcher_ref`,
    `last_heartbeat_at`, ...), also gets the row of its latest run (`RunModel`, attempt 1 unless given)."""
    project = project or make_project(session)
    run_fields = {name: overrides.pop(name) for name in RUN_FIELDS & overrides.keys()}
    fields: dict[str, Any] = {
        "project_id": project.id,
        "model": "tiny",
        "training_file": "file-test",
        "status": status,
        "spec": {"model": "/models/tiny"},
        "seed": 42,
    }
    job = JobModel(**(fields | overrides))
    if run_fields or job.status.is_active:
        job.attempt = job.attempt or 1
        session.add(RunModel(kind=RunKind.train, job_id=job.id, attempt=job.attempt, **run_fields))
    session.add(job)
    session.commit()
    return job
