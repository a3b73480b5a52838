"""alignd/jobs/progress.py: trainer reports move a job's step, total steps and `estimated_finish`."""

import pytest
from sqlmodel import Session

from alignd.contract import MetricPoint, ReportBatch, TrainerEvent
from alignd.jobs.progress import apply_report, estimate_finish
from alignd.jobs.state import JobStatus, transition
from alignd.models import JobModel, unix_now
from alignd.runs import current_run
from tests.db.factories import make_job

T0 = 1_700_000_000.0


def _loop_started(total_steps: int, step: int, at: float) -> TrainerEvent:
    """What the trainer sends as its training loop starts (`DPORecipe.train`)."""
    return TrainerEvent(
        type="status",
        message=f"training for {total_steps} steps",
        data={"total_steps": total_steps, "step": step},
        created_at=at,
    )


def _step(step: int, at: float) -> MetricPoint:
    return MetricPoint(step=step, values={"loss": 0.69, "num_tokens": 100.0 * step}, created_at=at)


def _reload(session: Session, job_id: str) -> JobModel:
    job = session.get(JobModel, job_id, populate_existing=True)
    assert job is not None
    return job


def _report(session: Session, job: JobModel, batch: ReportBatch) -> tuple[JobModel, int, int]:
    """Apply the batch; return the job and the server's clock around it (the estimate counts from it)."""
    before = unix_now()
    apply_report(session, _reload(session, job.id), batch)
    return _reload(session, job.id), before, unix_now()


def test_estimated_finish_follows_the_runs_pace(session: Session) -> None:
    job = make_job(session, status=JobStatus.running, started_at=int(T0) - 600)

    job, _, _ = _report(session, job, ReportBatch(events=[_loop_started(100, 0, T0)]))
    assert (job.step, job.total_steps, job.estimated_finish) == (0, 100, None), "no step done yet"

    # 10 steps in 20 s: 2 s a step, 90 steps to go -> 180 s from now.
    job, before, after = _report(session, job, ReportBatch(metrics=[_step(9, T0 + 18), _step(10, T0 + 20)]))
    assert job.step == 10 and job.trained_tokens == 1000
    assert job.estimated_finish is not None and before + 180 <= job.estimated_finish <= after + 180

    # Faster now: 40 steps in 40 s since the loop started -> 1 s a step, 60 to go.
    job, before, after = _report(session, job, ReportBatch(metrics=[_step(40, T0 + 40)]))
    assert job.estimated_finish is not None and before + 60 <= job.estimated_finish <= after + 60


def test_a_resumed_run_is_paced_from_its_own_start(session: Session) -> None:
    """A run resumed at step 50 an hour later: neither the pause nor the 50 earlier steps count."""
    job = make_job(session, status=JobStatus.running, started_at=int(T0), run_start_step=0, total_steps=100)
    resumed = T0 + 3600
    batch = ReportBatch(events=[_loop_started(100, 50, resumed)], metrics=[_step(55, resumed + 5)])
    job, before, after = _report(session, job, batch)
    run = current_run(session, job)
    assert run is not None
    assert (job.step, run.run_start_step, run.run_start_at) == (55, 50, int(resumed))
    # 5 steps in 5 s -> 45 s for the 45 left.
    assert job.estimated_finish is not None and before + 45 <= job.estimated_finish <= after + 45


@pytest.mark.parametrize("to", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.queued])
def test_the_estimate_is_cleared_when_the_run_stops(session: Session, to: JobStatus) -> None:
    job = make_job(session, status=JobStatus.running, started_at=int(T0))
    _report(session, job, ReportBatch(events=[_loop_started(10, 0, T0)], metrics=[_step(2, T0 + 2)]))
    assert _reload(session, job.id).estimated_finish is not None

    transition(session, job.id, to=to, event="run stopped")
    assert _reload(session, job.id).estimated_finish is None


def test_pausing_keeps_the_estimate_and_paused_clears_it(session: Session) -> None:
    job = make_job(session, status=JobStatus.running, started_at=int(T0))
    _report(session, job, ReportBatch(events=[_loop_started(10, 0, T0)], metrics=[_step(2, T0 + 2)]))
    transition(session, job.id, to=JobStatus.pausing, event="pause requested")
    assert _reload(session, job.id).estimated_finish is not None, "still running until it checkpoints"
    transition(session, job.id, to=JobStatus.paused, event="paused")
    assert _reload(session, job.id).estimated_finish is None


def test_a_report_that_lands_after_the_job_ended_sets_no_estimate(session: Session) -> None:
    job = make_job(session, status=JobStatus.running, started_at=int(T0))
    stale = _reload(session, job.id)  # what the report's authentication read, before the job ended
    transition(session, job.id, to=JobStatus.cancelled, event="cancelled")
    apply_report(session, stale, ReportBatch(events=[_loop_started(10, 0, T0)], metrics=[_step(2, T0 + 2)]))
    job = _reload(session, job.id)
    assert (job.estimated_finish, job.step) == (None, None)


def test_estimate_finish_arithmetic() -> None:
    """pace = (reported_at - start_at) / (step - start_step); finish = now + (total - step) * pace."""
    common = {"start_at": 100.0, "now": 1000}
    assert estimate_finish(step=10, total_steps=30, start_step=0, reported_at=120.0, **common) == 1040
    assert estimate_finish(step=12, total_steps=30, start_step=10, reported_at=101.0, **common) == 1009
    assert estimate_finish(step=30, total_steps=30, start_step=0, reported_at=400.0, **common) == 1000
    assert estimate_finish(step=0, total_steps=30, start_step=0, reported_at=100.0, **common) is None
    assert estimate_finish(step=5, total_steps=None, start_step=0, reported_at=110.0, **common) is None
