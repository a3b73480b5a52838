"""Eval runs execute like training runs: the controller's step for them.

    queued       -> claim it (`service.mark_in_progress`), insert a `RunModel(kind=evaluate)` with a fresh
                    token, launch `python -m alignd_trainer.evaluate` through the launcher
    in_progress  -> poll the launcher: pending holds the heartbeat; running checks it; succeeded
                    completes the run (`service.finish_run` aggregates the stored items and writes the
                    report); a lost run, or one that ended with a retriable code, is launched again as
                    a new attempt (up to `eval_max_retries`); anything else fails the run with its reason
    cancel       -> `desired="cancel"` on an in-progress run: terminate the attempt, end the run canceled

Each step follows the controller's rules (STYLE rule 6): read the rows, act with no session open
(launcher calls), then write guarded by the run's `lock_token` (status moves, through `service`) or by
the attempt still being open (`ended_at IS NULL`); a step that lost the race drops its result. One run's
exception is logged and retried on the next pass, never the end of the pass.

Projects' quotas: a run waits queued while its project has `quota_concurrent_jobs` eval runs in progress.
"""

import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Executable, update
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, func, select

from alignd import auth, runs
from alignd.config import Settings
from alignd.contract import JobSpec, Resources
from alignd.contract.evals import EvalReport
from alignd.errors import Unauthenticated
from alignd.evals import after_training, service
from alignd.evals.resolve import ResolvedRun
from alignd.evals.status import EvalRunStatus
from alignd.jobs import quotas
from alignd.jobs.lifecycle import RunEndReason, RunKind, error_code
from alignd.launchers import Launcher, RunState, RunStatus
from alignd.models import EvalRunModel, JobModel, ProjectModel, RunModel, unix_now
from alignd.storage import ObjectStore

log = logging.getLogger("alignd.evals.execution")
BAD_TOKEN = "invalid eval run token"


# ---- the evaluator's token -------------------------------------------------------------------------------


def authenticate_run_token(session: Session, run_id: str, plaintext: str) -> tuple[EvalRunModel, RunModel]:
    """The in-progress eval run `run_id` and its open attempt, if `plaintext` is that attempt's token;
    Unauthenticated otherwise (whatever the reason, so a token reveals nothing about other runs)."""
    run = session.get(EvalRunModel, run_id, populate_existing=True)
    if run is None or run.status != EvalRunStatus.in_progress:
        raise Unauthenticated(BAD_TOKEN)
    digest = auth.hash_secret(plaintext)
    attempt = session.exec(
        select(RunModel).where(
            col(RunModel.kind) == RunKind.evaluate,
            col(RunModel.eval_run_id) == run_id,
            col(RunModel.ended_at).is_(None),
            col(RunModel.token_hash).is_not(None),
        )
    ).first()
    if attempt is None or not hmac.compare_digest(attempt.token_hash or "", digest):
        raise Unauthenticated(BAD_TOKEN)
    return run, attempt


def apply_report(session: Session, run: EvalRunModel, attempt: RunModel, report: EvalReport) -> None:
    """Store the report's graded items and the attempt's heartbeat and progress (items done of total)."""
    if report.items:
        service.record_output_items(session, run, report.items)
    values: dict[str, Any] = {"last_heartbeat_at": unix_now()}
    if report.progress is not None:
        values |= {"step": report.progress.done, "total_steps": report.progress.total}
    session.execute(
        update(RunModel)
        .where(col(RunModel.id) == attempt.id, col(RunModel.ended_at).is_(None))
        .values(**values)
    )
    session.commit()
    for event in report.events:
        log.info("eval run %s (attempt %d): %s", run.id, attempt.attempt, event.message)


# ---- the controller step -----------------------------------------------------------------------------------


@dataclass
class EvalExecutor:
    sessions: sessionmaker[Session]
    launcher: Launcher
    store: ObjectStore
    settings: Settings
    clock: Callable[[], float] = time.time
    _failing: dict[str, str] = field(default_factory=dict)
    """run id -> the kind of error its step last failed with, so an outage is logged once."""

    def reconcile_once(self) -> None:
        self.launch_queued()
        self.sync_in_progress()

    def live_owner_ids(self) -> set[str]:
        """Eval runs whose attempts may be live: the controller must not take them for orphans."""
        with self.sessions() as session:
            return set(
                session.exec(
                    select(EvalRunModel.id).where(col(EvalRunModel.status) == EvalRunStatus.in_progress)
                )
            )

    def job_succeeded(self, job: JobModel) -> None:
        """A job just succeeded: start the runs of the evals it asked for (`after_training`)."""
        with self.sessions() as session:
            after_training.start_runs(session=session, settings=self.settings, store=self.store, job=job)

    # ---- queued runs ---------------------------------------------------------------------------------

    def launch_queued(self) -> None:
        with self.sessions() as session:
            queued = list(
                session.exec(
                    select(EvalRunModel)
                    .where(col(EvalRunModel.status) == EvalRunStatus.queued)
                    .order_by(col(EvalRunModel.created_at_us))
                )
            )
            counts = session.execute(
                select(col(EvalRunModel.project_id), func.count())
                .where(col(EvalRunModel.status) == EvalRunStatus.in_progress)
                .group_by(col(EvalRunModel.project_id))
            )
            running = {project_id: int(n) for project_id, n in counts}
            limits = {
                p.id: quotas.job_quota(p, self.settings).concurrent_jobs
                for p in session.exec(select(ProjectModel))
            }
        for run in queued:
            if running.get(run.project_id, 0) >= limits.get(run.project_id, 0):
                continue
            with self._isolated(run.id):
                with self.sessions() as session:
                    claimed = service.mark_in_progress(session, run)
                if claimed:
                    running[run.project_id] = running.get(run.project_id, 0) + 1
                    self._launch(run, attempt=1)

    def _launch(self, run: EvalRunModel, *, attempt: int) -> None:
        """Insert attempt `attempt` with a fresh token, then launch it; a launcher that refuses fails the
        run (the attempt ends as launch_failed)."""
        token, token_hash = auth.new_job_token()
        row = runs.new_run(
            kind=RunKind.evaluate,
            attempt=attempt,
            token_hash=token_hash,
            now=int(self.clock()),
            eval_run_id=run.id,
        )
        with self.sessions() as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            env = runs.trainer_env(self.settings, run.id, token)
            request = runs.launch_request(row, spec=self._job_spec(session, run), env=env)
        try:
            ref = self.launcher.launch(request)
        except Exception as exc:
            log.exception("launch of eval run %s failed", run.id)
            self._write(runs.ended(row.id, reason=RunEndReason.launch_failed, exit_code=None, now=unix_now()))
            self._finish(
                run,
                EvalRunStatus.failed,
                {
                    "code": RunEndReason.launch_failed.error_code,
                    "message": f"the launcher could not start the run: {exc}",
                },
            )
            return
        self._write(runs.launched(row.id, ref))

    def _job_spec(self, session: Session, run: EvalRunModel) -> JobSpec:
        """What the launcher reads of a run: its resources. An `ft:` model's run takes its job's GPUs (one
        node, one process: generation needs no torchrun), a base model's the `eval_gpus` settings."""
        resolved = ResolvedRun.model_validate(run.resolved)
        resources = Resources(gpus=self.settings.eval_gpus, gpu_type=self.settings.eval_gpu_type)
        job = (
            session.get(JobModel, resolved.model.job_id) if resolved.model and resolved.model.job_id else None
        )
        if job is not None:
            trained = JobSpec.model_validate(job.spec).resources
            resources = trained.model_copy(update={"gpus": min(trained.gpus, 1), "nodes": 1})
        model = resolved.model.name if resolved.model else "none"
        return JobSpec(job_id=run.id, model=model, training_file="evaluation", resources=resources)

    # ---- in-progress runs ----------------------------------------------------------------------------

    def sync_in_progress(self) -> None:
        with self.sessions() as session:
            runs = list(
                session.exec(
                    select(EvalRunModel).where(col(EvalRunModel.status) == EvalRunStatus.in_progress)
                )
            )
            attempts = {
                row.eval_run_id: row
                for row in session.exec(
                    select(RunModel)
                    .where(
                        col(RunModel.kind) == RunKind.evaluate,
                        col(RunModel.eval_run_id).in_([r.id for r in runs]),
                    )
                    .order_by(col(RunModel.attempt))
                )
            }
        for run in runs:
            with self._isolated(run.id):
                self._sync(run, attempts.get(run.id))

    def _sync(self, run: EvalRunModel, attempt: RunModel | None) -> None:
        if attempt is None:  # claimed, then the controller stopped before inserting the attempt
            self._launch(run, attempt=1)
            return
        if run.desired == "cancel":
            self._cancel(run, attempt)
            return
        if attempt.ended_at is not None:  # the attempt ended, but the run's move after it was lost
            state = RunState.succeeded if attempt.end_reason is RunEndReason.succeeded else RunState.failed
            self._after(
                run, attempt, RunStatus(state, exit_code=attempt.exit_code, reason=attempt.end_reason)
            )
            return
        status = runs.poll(self.launcher, attempt)
        if status.state is RunState.pending:
            if runs.heartbeat_due(
                attempt, now=self.clock(), heartbeat_timeout=self.settings.heartbeat_timeout_seconds
            ):
                self._write(runs.heartbeat(attempt.id, int(self.clock())))
        elif status.state is RunState.running:
            self._check_deadline(run, attempt)
        else:
            end = runs.end_reason(status)
            self._write(runs.ended(attempt.id, reason=end, exit_code=status.exit_code, now=unix_now()))
            self._keep_logs(attempt)
            self._after(run, attempt, status)

    def _after(self, run: EvalRunModel, attempt: RunModel, status: RunStatus) -> None:
        """The attempt ended: complete the run, launch the next attempt, or fail the run."""
        if status.state is RunState.succeeded:
            self._finish(run, EvalRunStatus.completed, None)
        elif runs.retriable(status) and attempt.attempt <= self.settings.eval_max_retries:
            log.warning(
                "eval run %s: attempt %d ended (%s: %s); launching attempt %d",
                run.id,
                attempt.attempt,
                status.reason,
                status.message,
                attempt.attempt + 1,
            )
            self._launch(run, attempt=attempt.attempt + 1)
        else:
            message = status.message or "the evaluation run failed"
            self._finish(run, EvalRunStatus.failed, {"code": error_code(status.reason), "message": message})

    def _cancel(self, run: EvalRunModel, attempt: RunModel) -> None:
        runs.terminate(self.launcher, attempt, grace_seconds=self.settings.cancel_grace_seconds)
        self._write(runs.ended(attempt.id, reason=RunEndReason.cancelled, exit_code=None, now=unix_now()))
        self._keep_logs(attempt)
        self._finish(run, EvalRunStatus.canceled, None)

    def _check_deadline(self, run: EvalRunModel, attempt: RunModel) -> None:
        overdue = runs.overdue(
            attempt,
            now=self.clock(),
            heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
            max_runtime=None,
            runtime_since=None,
        )
        if overdue is None:
            return
        reason, message = overdue
        runs.terminate(self.launcher, attempt, grace_seconds=self.settings.cancel_grace_seconds)
        self._write(runs.ended(attempt.id, reason=reason, exit_code=None, now=unix_now()))
        self._finish(run, EvalRunStatus.failed, {"code": reason.error_code, "message": message})

    def _keep_logs(self, attempt: RunModel) -> None:
        """The evaluator's output, kept in the store; an outage only loses the copy, never the run's move."""
        try:
            logs = self.launcher.logs(runs.owner_id(attempt), attempt.launcher_ref)
            if logs is not None:
                key = runs.logs_key(attempt)
                self.store.put_bytes(key, logs)
                self._write(runs.logs_kept(attempt.id, key))
        except Exception:
            log.exception("could not keep the logs of eval run attempt %s", attempt.id)

    # ---- writes --------------------------------------------------------------------------------------

    def _finish(self, run: EvalRunModel, status: EvalRunStatus, error: dict[str, str] | None) -> None:
        """Move the run to its end with its figures and report, unless someone moved it since we read it
        (`finish_run` compares the lock token)."""
        with self.sessions() as session:
            service.finish_run(session=session, store=self.store, run=run, status=status, error=error)

    def _write(self, statement: Executable) -> None:
        with self.sessions() as session:
            session.execute(statement)
            session.commit()

    @contextlib.contextmanager
    def _isolated(self, run_id: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            kind = type(exc).__name__
            if self._failing.get(run_id) != kind:
                log.exception("the step of eval run %s failed; retrying on the next pass", run_id)
                self._failing[run_id] = kind
        else:
            self._failing.pop(run_id, None)
