"""Rows for DB tests. Each call makes new, uniquely named rows, so tests share one database safely."""

import secrets
from typing import Any

from sqlmodel import Session

from alignd.jobs.state import JobStatus
from alignd.models import JobModel, ProjectModel


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
    `alignd.jobs.state.transition`)."""
    project = project or make_project(session)
    fields: dict[str, Any] = {
        "project_id": project.id,
        "model": "tiny",
        "training_file": "file-test",
        "status": status,
        "spec": {"model": "/models/tiny"},
        "seed": 42,
    }
    job = JobModel(**(fields | overrides))
    session.add(job)
    session.commit()
    return job
