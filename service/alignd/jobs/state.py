"""The one door for a job's status (STYLE rule 5).

A job's status changes only through `transition`: it checks the move against `lifecycle.ALLOWED`,
applies it with a compare-and-set UPDATE (`WHERE id = ? AND status = <what we read> [AND lock_token = ?]`),
and records a "status" event in the same transaction (with the webhook deliveries a terminal status owes,
see `alignd.webhooks.outbox`). When another writer (a second controller, a cancel racing the trainer's
completion) moved the job first, zero rows match and `transition` returns None: the caller drops its
result. Nothing else assigns `JobModel.status`. The statuses and their moves are in `alignd.jobs.lifecycle`.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable, func, select, update
from sqlmodel import Session, SQLModel, col

from alignd.errors import Conflict, NotFound
from alignd.jobs.events import add_events
from alignd.jobs.lifecycle import JobStatus, is_allowed
from alignd.models import JobEventModel, JobModel, new_lock_token, unix_now
from alignd.webhooks.outbox import enqueue_job_event

__all__ = ["JobStatus", "check_transition", "record_event", "transition"]

# Columns `transition` owns; callers may not pass them in `fields`.
_OWNED = frozenset({"id", "status", "lock_token", "updated_at"})


def check_transition(current: JobStatus | str, to: JobStatus | str, *, job_id: str) -> None:
    """Raise Conflict, in words a user understands, unless `current -> to` is an allowed move."""
    if not is_allowed(current, to):
        raise Conflict(f"job {job_id} is {JobStatus(current)}; it cannot be {JobStatus(to).verb}")


def transition(
    session: Session,
    job_id: str,
    *,
    to: JobStatus,
    expected_lock: str | None = None,
    event: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    rows: Sequence[SQLModel] = (),
    statements: Sequence[Executable] = (),
) -> JobModel | None:
    """Move job `job_id` to status `to`, record a "status" event with message `event`, commit.

    Returns the updated row, or None when the job moved under us: its lock token is no longer
    `expected_lock`, or another writer changed its status between our read and our UPDATE. Raises
    NotFound for an unknown job and Conflict when the move is not allowed from the status read.

    `fields` are further JobModel attributes set in the same UPDATE (error, attempt, desired, ...).
    Entering running sets `started_at` (the first start is kept across retries);
    entering a terminal status sets `finished_at`; leaving running or pausing clears
    `estimated_finish`; explicit `fields` win. `rows` (a new run, a results file) are inserted and
    `statements` (a run's end, `alignd.runs`) executed in the same transaction, only when the move
    happens. Commits the session.
    """
    to = JobStatus(to)
    extra = dict(fields or {})
    if owned := _OWNED & extra.keys():
        raise ValueError(f"transition owns {sorted(owned)}; do not pass them in fields")

    current = session.execute(
        select(col(JobModel.status), col(JobModel.lock_token)).where(col(JobModel.id) == job_id)
    ).one_or_none()
    if current is None:
        raise NotFound(f"job {job_id} not found", param="job_id")
    from_status, lock = JobStatus(current.status), current.lock_token
    if expected_lock is not None and lock != expected_lock:
        session.rollback()
        return None
    check_transition(from_status, to, job_id=job_id)

    now = unix_now()
    values: dict[str, Any] = {"status": to, "lock_token": new_lock_token(), "updated_at": now}
    if to is JobStatus.running:
        values["started_at"] = func.coalesce(JobModel.started_at, now)
    if to.is_terminal:
        values["finished_at"] = now
    if not to.is_active:
        values["estimated_finish"] = None  # only a run in progress has a finish to estimate
    values.update(extra)

    statement = (
        update(JobModel)
        .where(col(JobModel.id) == job_id)
        .where(col(JobModel.status) == from_status.value)
        .where(col(JobModel.lock_token) == lock)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    status_event = JobEventModel(
        job_id=job_id,
        created_at=now,
        level=level,
        type="status",
        message=event,
        data={"status": to.value, "previous_status": from_status.value, **(data or {})},
    )
    add_events(session, job_id, [status_event])
    session.add_all(rows)
    for run_statement in statements:
        session.execute(run_statement)
    if to.is_terminal:  # the webhook outbox: deliveries commit with the status change, or not at all
        enqueue_job_event(session, job_id=job_id, status=to.value, created_at=now)
    session.commit()
    return session.get(JobModel, job_id, populate_existing=True)


def record_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEventModel:
    """Append an event to a job's log and commit. Status events come from `transition` only."""
    if type == "status":
        raise ValueError('"status" events are recorded by transition(), with the status change')
    event = JobEventModel(job_id=job_id, level=level, type=type, message=message, data=data)
    add_events(session, job_id, [event])
    session.commit()
    return event
