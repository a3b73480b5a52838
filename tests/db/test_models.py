"""alignd/models.py: ids, JSON columns and the constraints the schema enforces on both backends."""

import re

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, col

from alignd.jobs.lifecycle import JobStatus
from alignd.models import CheckpointModel, FileModel, JobModel, MetricModel, new_id

from .factories import make_job, make_project


def test_ids_carry_their_prefix_and_are_random() -> None:
    ids = {new_id("ftjob-") for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"ftjob-[0-9a-f]{24}", i) for i in ids)
    assert JobModel(
        project_id="p", model="m", training_file="f", status=JobStatus.queued, spec={}, seed=1
    ).id.startswith("ftjob-")


def test_json_columns_round_trip_and_metadata_is_stored_as_metadata(session: Session) -> None:
    job = make_job(
        session,
        job_metadata={"team": "alignment"},
        request={"method": {"type": "dpo"}},
        result_files=["file-a"],
        error=None,
    )
    session.expire_all()

    loaded = session.get(JobModel, job.id)
    assert loaded is not None
    assert (loaded.job_metadata, loaded.request, loaded.result_files, loaded.error) == (
        {"team": "alignment"},
        {"method": {"type": "dpo"}},
        ["file-a"],
        None,
    )
    raw = session.execute(text("SELECT metadata FROM jobs WHERE id = :id"), {"id": job.id}).scalar_one()
    assert raw in ({"team": "alignment"}, '{"team": "alignment"}')


def test_idempotency_key_is_unique_per_project(session: Session) -> None:
    project, other = make_project(session), make_project(session)
    make_job(session, project, idempotency_key="create-1")
    make_job(session, other, idempotency_key="create-1")  # another project may reuse it
    make_job(session, project, idempotency_key=None)
    make_job(session, project, idempotency_key=None)  # no key: no constraint

    with pytest.raises(IntegrityError):
        make_job(session, project, idempotency_key="create-1")
    session.rollback()


def test_one_checkpoint_per_job_and_step(session: Session) -> None:
    job = make_job(session)
    session.add(CheckpointModel(job_id=job.id, step=10, storage_prefix="jobs/x/checkpoints/step-00000010/"))
    session.commit()

    session.add(CheckpointModel(job_id=job.id, step=10, storage_prefix="again"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_foreign_keys_are_enforced(session: Session) -> None:
    session.add(
        FileModel(project_id="proj_missing", filename="a.jsonl", bytes=1, sha256="0", storage_key="files/x")
    )
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_metric_points_keep_their_values(session: Session) -> None:
    job = make_job(session)
    for step in (2, 1):
        session.add(
            MetricModel(job_id=job.id, step=step, epoch=0.5, values={"loss": 0.6931, "rewards/margins": 0.0})
        )
    session.commit()

    query = select(MetricModel).where(col(MetricModel.job_id) == job.id).order_by(col(MetricModel.step))
    points = list(session.execute(query).scalars())
    assert [(p.step, p.split, p.epoch, p.values["loss"]) for p in points] == [
        (1, "train", 0.5, 0.6931),
        (2, "train", 0.5, 0.6931),
    ]


def test_status_is_stored_as_its_string_and_read_back_as_a_job_status(session: Session) -> None:
    """The column holds exactly what earlier releases wrote, so existing rows read without a migration."""
    job = make_job(session, status=JobStatus.pausing)
    raw = session.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job.id}).scalar_one()
    assert raw == "pausing"
    session.execute(text("UPDATE jobs SET status = 'paused' WHERE id = :id"), {"id": job.id})
    session.commit()
    session.expire_all()
    read = session.get(JobModel, job.id)
    assert read is not None and read.status is JobStatus.paused and not read.status.is_active
    paused = select(JobModel.id).where(col(JobModel.id) == job.id, col(JobModel.status) == "paused")
    assert list(session.execute(paused).scalars()) == [job.id]


def test_a_status_that_does_not_exist_is_never_written(session: Session) -> None:
    job = make_job(session)
    job.status = "paused_by_admin"  # type: ignore[assignment]
    with pytest.raises(StatementError, match="paused_by_admin"):
        session.commit()
    session.rollback()
