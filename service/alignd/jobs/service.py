"""Job requests from users: create (idempotent), read, cancel, pause, resume.

The controller does everything that touches a launcher; these functions only record intent and
move statuses through `state.transition`, the one door for status.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Engine, Select, bindparam
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.db import detached_row
from alignd.errors import InvalidRequest, NotFound
from alignd.files import PURPOSE, get_file
from alignd.integrations.runs import add_runs, check_integrations
from alignd.jobs.events import add_events
from alignd.jobs.lifecycle import JobStatus
from alignd.jobs.method import check_file_kind
from alignd.jobs.quotas import check_job_quota, lock_project
from alignd.jobs.spec import ResolvedJob, resolve_job, training_method
from alignd.jobs.start import BASE_MODEL_KEY, StartPoint, resolve_start
from alignd.jobs.state import transition
from alignd.jobs.tools_check import check_tools_rendered
from alignd.launchers import registry as launchers
from alignd.models import (
    FileModel,
    JobEventModel,
    JobModel,
    ProjectModel,
    new_id,
    unix_now_us,
)
from alignd.pagination import newest_first
from alignd.schemas import JobCreate


def create_job(
    *,
    session: Session,
    settings: Settings,
    project: ProjectModel,
    request: JobCreate,
    idempotency_key: str | None = None,
) -> JobModel:
    """Validate, resolve and queue a job, with its first event, in one transaction.

    Runs under the project's lock (`quotas.lock_project`), so concurrent requests cannot both take the
    last quota slot, and a request repeating an `Idempotency-Key` always finds the job the first one
    created and returns it, whatever the quota or the files say now. A new job that does not fit the
    project's quota is refused with QuotaExceeded (429).
    """
    lock_project(session, project)
    try:
        return _create_locked(session, settings, project, request, idempotency_key)
    except Exception:
        session.rollback()  # let go of the project's lock now, not when the request's session closes
        raise


def _create_locked(
    session: Session,
    settings: Settings,
    project: ProjectModel,
    request: JobCreate,
    idempotency_key: str | None,
) -> JobModel:
    if idempotency_key is not None:
        existing = session.exec(
            select(JobModel).where(
                JobModel.project_id == project.id, JobModel.idempotency_key == idempotency_key
            )
        ).first()
        if existing is not None:
            session.commit()
            return existing
    job_id = new_id("ftjob-")
    checked = check_request(
        session=session, settings=settings, project=project, request=request, job_id=job_id
    )
    resolved, start = checked.resolved, checked.start
    resources = resolved.spec.resources
    gpus = resources.gpus * resources.nodes
    check_job_quota(session, settings, project, gpus=gpus)
    integrations = request.integrations or []
    now_us = unix_now_us()
    job = JobModel(
        id=job_id,
        project_id=project.id,
        model=request.model,
        training_file=request.training_file,
        validation_file=request.validation_file,
        status=JobStatus.queued,
        spec=resolved.spec.model_dump(mode="json"),
        request=resolved.hyperparameters.model_dump(mode="json")
        | {"integrations": [entry.model_dump(mode="json") for entry in integrations]}
        | {BASE_MODEL_KEY: start.base.id},
        suffix=request.suffix,
        seed=resolved.spec.seed,
        job_metadata=request.metadata,
        priority=request.alignd.priority,
        gpus=gpus,
        idempotency_key=idempotency_key,
        created_at=now_us // 1_000_000,
        created_at_us=now_us,
    )
    session.add(job)
    session.flush()
    add_runs(session, job.id, integrations)
    created = JobEventModel(
        job_id=job.id, message=f"Created fine-tuning job: {job.id}", data={"status": job.status}
    )
    add_events(session, job.id, [created])
    session.commit()
    session.refresh(job)
    return job


@dataclass(frozen=True)
class CheckedRequest:
    resolved: ResolvedJob
    start: StartPoint


def check_request(
    *, session: Session, settings: Settings, project: ProjectModel, request: JobCreate, job_id: str
) -> CheckedRequest:
    """Everything job creation checks about the request itself, and its resolved spec: the files, the
    model (or the job or checkpoint it starts from), the hyperparameters, the resources and the
    integrations (not the quota, which is about the project's other jobs). The estimate
    (`alignd.estimates`) calls it too, so both refuse the same input with the same error."""
    training = _data_file(session, project, request.training_file, "training_file")
    validation = (
        _data_file(session, project, request.validation_file, "validation_file")
        if request.validation_file is not None
        else None
    )
    start = resolve_start(session, project, request)
    method = training_method(request)
    check_file_kind(training, method, "training_file")
    data_files = [("training_file", training)]
    if validation is not None:
        check_file_kind(validation, method, "validation_file")
        data_files.append(("validation_file", validation))
    check_tools_rendered(model=request.model, location=start.base.location, files=data_files)
    resolved = resolve_job(
        request,
        job_id=job_id,
        model_location=start.base.location,
        training_rows=training.rows,
        init=start.init,
    )
    launchers.check_resources(settings, resolved.spec.resources)
    check_integrations(session, settings, project, request.integrations or [])
    return CheckedRequest(resolved=resolved, start=start)


def _data_file(session: Session, project: ProjectModel, file_id: str, param: str) -> FileModel:
    try:
        row = get_file(session, project, file_id)
    except NotFound:
        raise InvalidRequest(
            f"no file with id {file_id!r}: upload it with POST /v1/files first",
            param=param,
            code="file_not_found",
        ) from None
    if row.purpose != PURPOSE:
        raise InvalidRequest(
            f"file {file_id} has purpose {row.purpose!r}, not preference data: pass a file uploaded "
            f"with purpose '{PURPOSE}'",
            param=param,
            code="invalid_file_purpose",
        )
    return row


def get_job(session: Session, project: ProjectModel, job_id: str) -> JobModel:
    job = session.get(JobModel, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound(f"no fine-tuning job with id {job_id!r}", param="fine_tuning_job_id")
    return job


def read_job(engine: Engine, project: ProjectModel, job_id: str) -> JobModel:
    """`get_job` for the hot path of clients polling a job: one Core query on a connection of its own,
    released before it returns, so an async route covers the read with one trip to the thread pool, and
    without the ORM's identity map and instrumentation, which are most of `session.get`'s work for one
    row. The job comes back detached with every column loaded."""
    keys, query = _job_by_id()
    with engine.connect() as connection:
        row = connection.execute(query, {"id": job_id}).one_or_none()
    if row is None or row.project_id != project.id:
        raise NotFound(f"no fine-tuning job with id {job_id!r}", param="fine_tuning_job_id")
    return detached_row(JobModel, dict(zip(keys, row, strict=True)))


@cache
def _job_by_id() -> tuple[list[str], Select[Any]]:
    """JobModel's attribute names and a query selecting their columns in that order, by id."""
    attributes = sa_inspect(JobModel).column_attrs
    columns = [attribute.columns[0] for attribute in attributes]
    return [attribute.key for attribute in attributes], select(*columns).where(
        col(JobModel.id) == bindparam("id")
    )


def list_jobs(
    session: Session, project: ProjectModel, *, after: str | None, limit: int, metadata: dict[str, str]
) -> tuple[list[JobModel], bool]:
    """Newest first; metadata filters match exactly on every given key."""
    anchor = get_job(session, project, after) if after is not None else None
    rows = session.exec(
        newest_first(select(JobModel).where(JobModel.project_id == project.id), JobModel, anchor)
    )
    matching = (r for r in rows if all((r.job_metadata or {}).get(k) == v for k, v in metadata.items()))
    page = []
    for row in matching:
        page.append(row)
        if len(page) > limit:
            break
    return page[:limit], len(page) > limit


def cancel_job(session: Session, project: ProjectModel, job_id: str) -> JobModel:
    """Cancelled at once, as OpenAI does; the controller then stops the run."""
    return _user_request(session, project, job_id, JobStatus.cancelled, "Job cancelled by the user", "cancel")


def pause_job(session: Session, project: ProjectModel, job_id: str) -> JobModel:
    """Pausing: the controller sends SIGTERM, the trainer checkpoints and exits, the job is paused."""
    return _user_request(
        session, project, job_id, JobStatus.pausing, "Pause requested: saving a checkpoint", "pause"
    )


def resume_job(session: Session, project: ProjectModel, job_id: str) -> JobModel:
    return _user_request(
        session,
        project,
        job_id,
        JobStatus.queued,
        "Resumed: queued to continue from the last checkpoint",
        None,
    )


def _user_request(
    session: Session, project: ProjectModel, job_id: str, to: JobStatus, event: str, desired: str | None
) -> JobModel:
    """A user's status change on one of the project's jobs; `desired` tells the controller what to do."""
    job = get_job(session, project, job_id)
    moved = transition(session, job.id, to=to, event=event, fields={"desired": desired})
    return moved or get_job(session, project, job_id)


def list_events(
    session: Session, project: ProjectModel, job_id: str, *, after: str | None, limit: int
) -> tuple[list[JobEventModel], bool]:
    """Newest first, like OpenAI; `after` is an event id from the previous page."""
    get_job(session, project, job_id)
    query = select(JobEventModel).where(JobEventModel.job_id == job_id)
    if after is not None:
        anchor = session.exec(
            select(JobEventModel).where(JobEventModel.id == after, JobEventModel.job_id == job_id)
        ).first()
        if anchor is None:
            raise InvalidRequest(f"no event with id {after!r} in this job", param="after")
        query = query.where(col(JobEventModel.job_seq) < anchor.job_seq)
    rows = list(session.exec(query.order_by(col(JobEventModel.job_seq).desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def follow_events(
    sessions: sessionmaker[Session], job_id: str, *, poll_seconds: float = 0.5
) -> Iterator[JobEventModel]:
    """Every event of the job, oldest first, then new ones as they arrive, until the job has ended
    and nothing is left to send. Each poll opens its own short session (no transaction is held).

    The job's status is read before its events: the event that ends a job commits with the status
    change, so once a poll sees the job ended, its events query sees that event too."""
    last_seq = 0
    while True:
        with sessions() as session:
            job = session.get(JobModel, job_id)
            rows = events_after(session, job_id, last_seq)
        yield from rows
        if rows:
            last_seq = rows[-1].job_seq or last_seq
        if job is None or (job.status.is_terminal and not rows):
            return
        time.sleep(poll_seconds)


def events_after(session: Session, job_id: str, job_seq: int) -> list[JobEventModel]:
    """The job's events after position `job_seq`, oldest first: one poll of a follower.

    `job_seq` commits in order per job (`alignd.jobs.events`), so an event that commits after this
    query ran always has a higher `job_seq` than what it returned: a follower never skips one."""
    return list(
        session.exec(
            select(JobEventModel)
            .where(JobEventModel.job_id == job_id, col(JobEventModel.job_seq) > job_seq)
            .order_by(col(JobEventModel.job_seq))
        )
    )
