"""alignd/runs.py: the run-level work is the same for every kind of run; an evaluation run is launched
as its own module under its owner's id, and a run ends once, whoever tries to end it twice."""

from sqlmodel import Session

from alignd import runs
from alignd.contract import JobSpec
from alignd.jobs.lifecycle import RunEndReason, RunKind
from alignd.launchers import RunState, RunStatus
from alignd.models import RunModel
from tests.db.factories import make_job

SPEC = JobSpec(model="/models/tiny", training_file="file-test")


def test_an_evaluation_run_launches_the_evaluator_under_its_owner() -> None:
    run = runs.new_run(kind=RunKind.evaluate, eval_run_id="evalrun-1", attempt=2, token_hash="h", now=100)

    request = runs.launch_request(run, spec=SPEC, env={})

    assert (request.job_id, request.attempt, request.run_id, request.kind) == (
        "evalrun-1",
        2,
        run.id,
        "evaluate",
    )
    assert request.module == "alignd_trainer.evaluate"
    assert runs.logs_key(run) == "evals/evalrun-1/logs/attempt-2.log"


def test_a_training_run_keeps_the_names_jobs_had() -> None:
    run = runs.new_run(kind=RunKind.train, job_id="ftjob-1", attempt=3, token_hash="h", now=100)

    request = runs.launch_request(run, spec=SPEC, env={})

    assert (request.job_id, request.attempt, request.module) == ("ftjob-1", 3, "alignd_trainer")
    assert runs.logs_key(run) == "jobs/ftjob-1/logs/attempt-3.log"


def test_every_end_is_filed_under_a_reason() -> None:
    assert runs.end_reason(RunStatus(RunState.succeeded, exit_code=0)) is RunEndReason.succeeded
    assert runs.end_reason(RunStatus(RunState.failed, reason="OOMKilled")) is RunEndReason.oom_killed
    assert runs.end_reason(RunStatus(RunState.failed, reason="BackoffLimitExceeded")) is RunEndReason.failed
    assert runs.end_reason(RunStatus(RunState.missing, reason="Lost")) is RunEndReason.lost


def test_deadlines_count_from_the_last_report_and_the_owners_start() -> None:
    run = runs.new_run(kind=RunKind.train, job_id="ftjob-1", attempt=1, token_hash="h", now=1000)

    def overdue(now: float) -> RunEndReason | None:
        why = runs.overdue(run, now=now, heartbeat_timeout=60.0, max_runtime=500, runtime_since=900)
        return None if why is None else why[0]

    assert overdue(1050) is None
    assert overdue(1061) is RunEndReason.trainer_silent
    run.last_heartbeat_at = 1400
    assert overdue(1401) is RunEndReason.max_runtime


def test_a_run_ends_once(session: Session) -> None:
    job = make_job(session, attempt=1, launcher_ref="123")
    run = runs.current_run(session, job)
    assert run is not None and run.ended_at is None

    first = session.execute(runs.ended(run.id, reason=RunEndReason.cancelled, exit_code=None, now=10))
    second = session.execute(runs.ended(run.id, reason=RunEndReason.succeeded, exit_code=0, now=20))
    late_heartbeat = session.execute(runs.heartbeat(run.id, 30))
    session.commit()

    assert (first.rowcount, second.rowcount, late_heartbeat.rowcount) == (1, 0, 0)  # type: ignore[attr-defined]
    ended = session.get(RunModel, run.id, populate_existing=True)
    assert ended is not None and (ended.end_reason, ended.ended_at, ended.token_hash) == (
        RunEndReason.cancelled,
        10,
        None,
    )
