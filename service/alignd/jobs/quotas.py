"""Per-project job quotas: how many jobs may be in flight at once, and how many GPUs they may hold.

Checked twice, with one rule (`exceeded`). At creation (`check_job_quota`) a job that would put the
project over its quota is refused with 429, so a user learns at once rather than watching a job sit
queued; there, queued jobs count too (`JobStatus.counts_for_quota`). At scheduling the controller checks
again against what active runs hold (`usage_by_project` of `JobStatus.active()`): resumed jobs re-enter
the queue without being created, and they wait there until the project has room.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.errors import QuotaExceeded
from alignd.jobs.lifecycle import JobStatus
from alignd.models import JobModel, ProjectModel


@dataclass(frozen=True)
class JobQuota:
    concurrent_jobs: int
    gpus: int


@dataclass(frozen=True)
class Usage:
    jobs: int = 0
    gpus: int = 0

    def plus(self, gpus: int) -> "Usage":
        return Usage(self.jobs + 1, self.gpus + gpus)


class Limit(StrEnum):
    concurrent_jobs = "concurrent_jobs"
    gpus = "gpus"


def exceeded(quota: JobQuota, used: Usage, *, gpus: int) -> Limit | None:
    """The limit one more job needing `gpus` would pass on top of `used`; None when it fits."""
    after = used.plus(gpus)
    if after.jobs > quota.concurrent_jobs:
        return Limit.concurrent_jobs
    if after.gpus > quota.gpus:
        return Limit.gpus
    return None


def usage_by_project(session: Session, statuses: Iterable[JobStatus]) -> dict[str, Usage]:
    """Jobs and GPUs held per project by jobs in `statuses`."""
    rows = session.execute(
        select(col(JobModel.project_id), func.count(), func.coalesce(func.sum(JobModel.gpus), 0))
        .where(col(JobModel.status).in_(list(statuses)))
        .group_by(col(JobModel.project_id))
    )
    return {project_id: Usage(int(jobs), int(gpus)) for project_id, jobs, gpus in rows}


def job_quota(project: ProjectModel, settings: Settings) -> JobQuota:
    """The project's own limits, or the settings' defaults where it has none."""
    return JobQuota(
        concurrent_jobs=_or_default(project.quota_concurrent_jobs, settings.default_quota_concurrent_jobs),
        gpus=_or_default(project.quota_gpus, settings.default_quota_gpus),
    )


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value


def lock_project(session: Session, project: ProjectModel) -> None:
    """Hold the project row's write lock until the session commits or rolls back, so job creations in
    one project run one at a time: two of them cannot both see the last free slot.

    A no-op UPDATE, because it works on both backends: on Postgres it locks the row, on SQLite it takes
    the database's write lock. Call it first in the transaction (SQLite then reads after the lock).
    """
    session.execute(
        update(ProjectModel)
        .where(col(ProjectModel.id) == project.id)
        .values(quota_gpus=col(ProjectModel.quota_gpus))
        .execution_options(synchronize_session=False)
    )


def check_job_quota(session: Session, settings: Settings, project: ProjectModel, *, gpus: int) -> None:
    """Raise QuotaExceeded (429) unless one more job needing `gpus` fits the project's quota. Call it
    under `lock_project`, and commit the new job in the same transaction.
    """
    quota = job_quota(project, settings)
    jobs, used_gpus = session.execute(
        select(func.count(), func.coalesce(func.sum(JobModel.gpus), 0)).where(
            col(JobModel.project_id) == project.id, col(JobModel.status).in_(JobStatus.in_quota())
        )
    ).one()
    limit = exceeded(quota, Usage(jobs, used_gpus), gpus=gpus)
    if limit is Limit.concurrent_jobs:
        raise QuotaExceeded(
            f"concurrent job quota reached: project {project.name} has {jobs} jobs queued or running and "
            f"its quota is {quota.concurrent_jobs}; wait for one to finish (or cancel or pause one), "
            "or ask an admin to raise quota_concurrent_jobs"
        )
    if limit is Limit.gpus and gpus > quota.gpus:
        raise QuotaExceeded(
            f"GPU quota exceeded: this job needs {gpus} GPUs (gpus × nodes) but project {project.name}'s "
            f"quota is {quota.gpus}; request fewer GPUs, or ask an admin to raise quota_gpus",
            param="alignd.resources",
        )
    if limit is Limit.gpus:
        raise QuotaExceeded(
            f"GPU quota exceeded: project {project.name}'s queued and running jobs use {used_gpus} of its "
            f"{quota.gpus} GPUs and this job needs {gpus} more (gpus × nodes); wait for a job to finish, "
            "request fewer GPUs, or ask an admin to raise quota_gpus",
            param="alignd.resources",
        )
