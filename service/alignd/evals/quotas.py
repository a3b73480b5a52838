"""How many eval runs a project may have queued or in progress at once.

Eval runs take the project's `quota_concurrent_jobs` (or the settings' default) as their own limit,
counted over eval runs only: a project may run that many evaluations besides its fine-tuning jobs. Checked
at creation under the project's lock (`jobs.quotas.lock_project`), so two requests cannot both take the
last slot.
"""

from sqlalchemy import func
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.errors import QuotaExceeded
from alignd.evals.status import EvalRunStatus
from alignd.jobs.quotas import job_quota
from alignd.models import EvalRunModel, ProjectModel


def active_runs(session: Session, project_id: str) -> int:
    return int(
        session.exec(
            select(func.count())
            .select_from(EvalRunModel)
            .where(
                col(EvalRunModel.project_id) == project_id,
                col(EvalRunModel.status).in_(EvalRunStatus.active()),
            )
        ).one()
    )


def check_run_quota(session: Session, settings: Settings, project: ProjectModel) -> None:
    """QuotaExceeded (429) unless one more eval run fits; call it under `lock_project`."""
    limit = job_quota(project, settings).concurrent_jobs
    used = active_runs(session, project.id)
    if used + 1 > limit:
        raise QuotaExceeded(
            f"concurrent eval run quota reached: project {project.name} has {used} eval runs queued or in "
            f"progress and its quota is {limit}; wait for one to finish (or cancel one), or ask an admin "
            "to raise quota_concurrent_jobs"
        )
