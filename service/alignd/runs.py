"""What the controller does with a run, whoever owns it: one `RunModel` row per attempt.

A run belongs to an owner: a job (`RunKind.train`, `RunModel.job_id`) or, later, an evaluation
(`RunKind.evaluate`, `RunModel.eval_run_id`). Everything here works on the run row alone: build its
`LaunchRequest`, poll its launcher, file its end under a `RunEndReason`, stop it, keep its logs, and tell
when it missed its heartbeat or its runtime limit. What the end means for the owner (a job succeeds,
pauses, is retried) is the owner's business, in the controller.

The launcher calls take no database session; the statements here are guarded writes the caller runs in
its own transaction (with the owner's status move, so the two commit together or not at all).
"""

from typing import assert_never

from sqlalchemy import Update, select, update
from sqlmodel import Session, col

from alignd.config import Settings
from alignd.contract import ATTENTION_ENV, ExitCode, JobSpec
from alignd.jobs.lifecycle import RunEndReason, RunKind
from alignd.launchers import Launcher, LaunchRequest, RunState, RunStatus
from alignd.models import JobModel, RunModel


def current_run(session: Session, job: JobModel) -> RunModel | None:
    """The job's latest run, the one its `attempt` names; None before its first start."""
    return session.execute(
        select(RunModel).where(col(RunModel.job_id) == job.id, col(RunModel.attempt) == job.attempt)
    ).scalar_one_or_none()


def owner_id(run: RunModel) -> str:
    """The id launchers know the run by (with its attempt): its job's, or its evaluation run's."""
    match run.kind:
        case RunKind.train:
            owner = run.job_id
        case RunKind.evaluate:
            owner = run.eval_run_id
        case _:
            assert_never(run.kind)
    if owner is None:
        raise ValueError(f"run {run.id} ({run.kind}) has no owner id")
    return owner


def new_run(
    *,
    kind: RunKind,
    attempt: int,
    token_hash: str,
    now: int,
    job_id: str | None = None,
    eval_run_id: str | None = None,
) -> RunModel:
    """The row of a run about to be launched; the trainer has a whole heartbeat window from `now`."""
    return RunModel(
        kind=kind,
        job_id=job_id,
        eval_run_id=eval_run_id,
        attempt=attempt,
        token_hash=token_hash,
        last_heartbeat_at=now,
        started_at=now,
    )


def trainer_env(settings: Settings, owner: str, token: str) -> dict[str, str]:
    """What a run's process is told: who it is and where to report (the trainer's contract), and the
    deployment's trainer settings (launchers pass no other ALIGND_ variable of the server's)."""
    return {
        "ALIGND_JOB_ID": owner,
        "ALIGND_API_URL": settings.resolved_public_url(),
        "ALIGND_JOB_TOKEN": token,
        ATTENTION_ENV: settings.trainer_attention.value,
    }


def launch_request(run: RunModel, *, spec: JobSpec, env: dict[str, str]) -> LaunchRequest:
    return LaunchRequest(owner_id(run), run.attempt, spec, env, run_id=run.id, kind=run.kind)


def poll(launcher: Launcher, run: RunModel) -> RunStatus:
    return launcher.poll(owner_id(run), run.launcher_ref)


def terminate(launcher: Launcher, run: RunModel, *, grace_seconds: float) -> None:
    """SIGTERM (the trainer checkpoints), a kill after the grace period; a run already gone is fine."""
    launcher.terminate(owner_id(run), run.launcher_ref, grace_seconds=grace_seconds)


def holds_resources(launcher: Launcher, run: RunModel) -> bool:
    """Whether the launcher still has something live for the run's owner (pods that cannot schedule)."""
    return owner_id(run) in launcher.active_job_ids()


def end_reason(status: RunStatus) -> RunEndReason:
    return RunEndReason.of(succeeded=status.state is RunState.succeeded, reason=status.reason)


def retriable(status: RunStatus) -> bool:
    """Lost runs and the trainer's retriable exit codes; anything unknown is not retried."""
    reason = RunEndReason.parse(status.reason)
    if reason is not None and reason.retriable:
        return True
    if status.exit_code is None:
        return False
    try:
        return ExitCode(status.exit_code).retriable
    except ValueError:
        return False


def overdue(
    run: RunModel,
    *,
    now: float,
    heartbeat_timeout: float,
    max_runtime: int | None,
    runtime_since: int | None,
) -> tuple[RunEndReason, str] | None:
    """Why a running run must be stopped now, in words a user reads; None while it is within bounds.

    Silence counts from the trainer's last report (or the launch); the runtime from `runtime_since`,
    which the owner gives (a job's first start, so retries do not reset its limit)."""
    silent = now - (run.last_heartbeat_at or run.started_at)
    if silent > heartbeat_timeout:
        return RunEndReason.trainer_silent, (
            f"the trainer sent nothing for {int(silent)}s (heartbeat deadline {int(heartbeat_timeout)}s)"
        )
    if max_runtime is not None and runtime_since is not None and now - runtime_since > max_runtime:
        return RunEndReason.max_runtime, f"the job ran past max_runtime_seconds={max_runtime}"
    return None


def heartbeat_due(run: RunModel, *, now: float, heartbeat_timeout: float) -> bool:
    """A run still waiting to be placed gets its heartbeat held by the controller, once per half window."""
    return now - (run.last_heartbeat_at or 0) > heartbeat_timeout / 2


def logs_key(run: RunModel) -> str:
    match run.kind:
        case RunKind.train:
            return f"jobs/{owner_id(run)}/logs/attempt-{run.attempt}.log"
        case RunKind.evaluate:
            return f"evals/{owner_id(run)}/logs/attempt-{run.attempt}.log"
        case _:
            assert_never(run.kind)


# ---- guarded writes: statements for the caller's transaction --------------------------------------------


def _open(run_id: str) -> Update:
    """An UPDATE of the run while it has not ended: a second writer's end, or a late write, matches no row."""
    return update(RunModel).where(col(RunModel.id) == run_id, col(RunModel.ended_at).is_(None))


def launched(run_id: str, ref: str) -> Update:
    return _open(run_id).values(launcher_ref=ref)


def heartbeat(run_id: str, now: int) -> Update:
    return _open(run_id).values(last_heartbeat_at=now)


def progressed(run_id: str, **values: int | None) -> Update:
    """This run's step, total steps and the base of its pace, as its trainer reported them."""
    return _open(run_id).values(**values)


def ended(run_id: str, *, reason: RunEndReason, exit_code: int | None, now: int) -> Update:
    """The run's end, once; its token stops working with it."""
    return _open(run_id).values(ended_at=now, end_reason=reason, exit_code=exit_code, token_hash=None)


def logs_kept(run_id: str, key: str) -> Update:
    return update(RunModel).where(col(RunModel.id) == run_id).values(logs_key=key)
