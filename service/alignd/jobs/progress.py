"""What trainer reports do to a job: events, metric series, checkpoints, heartbeat, progress.

The heartbeat and the pace's base (where this run's loop started) belong to the job's latest run
(`RunModel`); the step, total steps and `estimated_finish` users see are the job's."""

from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from alignd import runs
from alignd.contract import EventLevel, ReportBatch
from alignd.jobs.artifacts import check_report_paths
from alignd.jobs.events import add_events
from alignd.jobs.lifecycle import JobStatus
from alignd.models import CheckpointModel, JobEventModel, JobModel, MetricModel, RunModel, new_id, unix_now
from alignd.runs import current_run

SUMMARY_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "learning_rate")


def apply_report(session: Session, job: JobModel, batch: ReportBatch) -> None:
    """Record one report batch; an empty batch is a heartbeat. Idempotent per checkpoint step.

    A batch naming a checkpoint outside the job's storage prefix is refused whole (400 and an event)."""
    check_report_paths(session, job, batch)
    now = unix_now()
    # First, so the job row is locked before the metric rows take their ids: per job, metric ids then
    # commit in increasing order, and a reader's cursor on `MetricModel.id` (the integrations worker's)
    # never passes one that commits later.
    session.execute(select(col(JobModel.id)).where(col(JobModel.id) == job.id).with_for_update())
    run = current_run(session, job)
    if run is not None:
        session.execute(runs.heartbeat(run.id, now))
    tokens = [p.values["num_tokens"] for p in batch.metrics if "num_tokens" in p.values]
    if tokens:
        session.execute(
            update(JobModel).where(col(JobModel.id) == job.id).values(trained_tokens=int(max(tokens)))
        )
    timed: list[tuple[float, JobEventModel]] = []
    for event in batch.events:
        level = "warn" if event.level is EventLevel.warn else event.level.value
        timed.append(
            (
                event.created_at,
                JobEventModel(
                    job_id=job.id,
                    created_at=int(event.created_at),
                    level=level,
                    type="message",
                    message=event.message,
                    data={"trainer_event": event.type, **event.data},
                ),
            )
        )
    for point in batch.metrics:
        session.add(
            MetricModel(
                job_id=job.id,
                step=point.step,
                split=point.split,
                epoch=point.epoch,
                values=point.values,
                created_at=int(point.created_at),
            )
        )
        if point.split == "train":
            summary = {k: point.values[k] for k in SUMMARY_METRICS if k in point.values}
            timed.append(
                (
                    point.created_at,
                    JobEventModel(
                        job_id=job.id,
                        created_at=int(point.created_at),
                        type="metrics",
                        message=f"Step {point.step}: training loss={point.values.get('loss', 0):.4f}",
                        data={"step": point.step, "train_loss": point.values.get("loss"), **summary},
                    ),
                )
            )
    # Events and metric points travel in separate lists; the log shows them in the order they happened.
    add_events(session, job.id, [event for _, event in sorted(timed, key=lambda pair: pair[0])])
    for checkpoint in batch.checkpoints:
        exists = session.exec(
            select(CheckpointModel).where(
                CheckpointModel.job_id == job.id, CheckpointModel.step == checkpoint.step
            )
        ).first()
        if exists is None:
            session.add(
                CheckpointModel(
                    id=new_id("ftckpt-"),
                    job_id=job.id,
                    step=checkpoint.step,
                    metrics=checkpoint.metrics,
                    storage_prefix=checkpoint.path,
                )
            )
    if progress := _progress(job, run, batch, now=now):
        # Only while the run is live: a report that lands after the job ended leaves no estimate behind.
        session.execute(
            update(JobModel)
            .where(col(JobModel.id) == job.id, col(JobModel.status).in_(JobStatus.active()))
            .values({k: v for k, v in progress.items() if k in _JOB_PROGRESS})
        )
        if run is not None:
            session.execute(
                runs.progressed(run.id, **{k: v for k, v in progress.items() if k in _RUN_PROGRESS})
            )
    session.commit()


_JOB_PROGRESS = frozenset({"step", "total_steps", "estimated_finish"})
_RUN_PROGRESS = frozenset({"step", "total_steps", "run_start_step", "run_start_at"})


def _progress(job: JobModel, run: RunModel | None, batch: ReportBatch, *, now: int) -> dict[str, Any]:
    """Step, total steps and `estimated_finish` after this batch, where it tells anything new.

    The trainer announces `total_steps` (and the step it starts from: 0, or a checkpoint's after a
    resume) when its training loop starts; every train metric point is a step done. The pace is this
    run's own (steps since its loop started over the time they took, both on the trainer's clock), so
    time spent paused, queued or loading the model does not count as training time.
    """
    values: dict[str, Any] = {}
    for event in batch.events:
        if event.type == "status" and isinstance(event.data.get("total_steps"), int):
            values["total_steps"] = event.data["total_steps"]
            values["run_start_step"] = int(event.data.get("step", 0))
            values["run_start_at"] = int(event.created_at)
            values["step"] = values["run_start_step"]
    train = [p for p in batch.metrics if p.split == "train"]
    if not values and not train:
        return {}
    if train:
        latest = max(train, key=lambda p: p.step)
        values["step"] = latest.step
        reported_at = latest.created_at
    else:
        reported_at = float(values["run_start_at"])
    total = values.get("total_steps", job.total_steps)
    start_step = values.get("run_start_step", (run and run.run_start_step) or 0)
    start_at = values.get("run_start_at", (run and run.run_start_at) or job.started_at)
    values["estimated_finish"] = estimate_finish(
        step=values["step"],
        total_steps=total,
        start_step=start_step,
        start_at=start_at,
        reported_at=reported_at,
        now=now,
    )
    return values


def estimate_finish(
    *,
    step: int,
    total_steps: int | None,
    start_step: int,
    start_at: float | None,
    reported_at: float,
    now: int,
) -> int | None:
    """Unix seconds the run should end at its pace so far; None until one step of this run is done.

    pace = (reported_at - start_at) / (step - start_step) seconds per step;
    finish = now + (total_steps - step) * pace.
    """
    done = step - start_step
    if total_steps is None or start_at is None or done <= 0:
        return None
    if step >= total_steps:
        return now
    pace = max(0.0, reported_at - start_at) / done
    return int(now + (total_steps - step) * pace)
