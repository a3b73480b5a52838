"""What trainer reports do to a job: events, metric series, checkpoints, heartbeat, progress."""

import time

from sqlalchemy import update
from sqlmodel import Session, col, select

from alignd.contract import EventLevel, ReportBatch
from alignd.models import CheckpointModel, JobEventModel, JobModel, MetricModel, new_id

SUMMARY_METRICS = ("loss", "rewards/margins", "rewards/accuracies", "learning_rate")


def apply_report(session: Session, job: JobModel, batch: ReportBatch) -> None:
    """Record one report batch; an empty batch is a heartbeat. Idempotent per checkpoint step."""
    now = int(time.time())
    for event in batch.events:
        level = "warn" if event.level is EventLevel.warn else event.level.value
        session.add(
            JobEventModel(
                job_id=job.id,
                created_at=int(event.created_at),
                level=level,
                type="message",
                message=event.message,
                data={"trainer_event": event.type, **event.data},
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
            session.add(
                JobEventModel(
                    job_id=job.id,
                    created_at=int(point.created_at),
                    type="metrics",
                    message=f"Step {point.step}: training loss={point.values.get('loss', 0):.4f}",
                    data={"step": point.step, "train_loss": point.values.get("loss"), **summary},
                )
            )
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
    values: dict[str, object] = {"last_heartbeat_at": now}
    tokens = [p.values["num_tokens"] for p in batch.metrics if "num_tokens" in p.values]
    if tokens:
        values["trained_tokens"] = int(max(tokens))
    session.execute(update(JobModel).where(col(JobModel.id) == job.id).values(**values))
    session.commit()
