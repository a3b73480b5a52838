"""The reconcile loop: queued jobs are launched within quotas, running jobs are synced with their
launcher, cancelled ones are stopped, silent or overdue ones failed, orphans removed.

One step per job status, each in three parts: load the job with its latest run (`RunModel`) → act with
no session open (launcher, store) → a guarded write: the job's compare-and-set `transition`, with the
run's own guarded statements (`alignd.runs`) in the same transaction; losing the race drops the result
(STYLE rule 6).

    queued                        `_start`: the run row commits with the move to running, then launch
    running, pausing              `_sync`: poll; hold the heartbeat while pending, check deadlines
                                  while running, `_settle` once ended (the run ends with the job's move)
    cancelled / pausing + desired `stop_cancelled`: terminate (a cancelled job's run ends there)

Each job's step is isolated: its exception is logged, becomes an event on that job, and the pass goes
on with the other jobs; the step runs again on the next pass. Trainer logs that could not be kept (a
store outage) do not hold a finished job back: they are kept on a later pass.

A new kind of run (`RunKind.evaluate`) plugs in through its owner. The run-level work is shared and
takes only the run row: `alignd.runs` builds the `LaunchRequest` (the launchers pick the module by
kind), polls, files the end under a `RunEndReason`, terminates, keeps logs under `runs.logs_key`, and
checks heartbeat and runtime deadlines. The owner brings four hooks, as the job's steps here do: a
loader of its rows to start, sync and stop with their latest runs (and a lock to guard its writes);
the spec and env its runs launch with; what a run's end means for it (the counterpart of `_settle`),
written with `runs.ended` in the same transaction as its own move; and its owner ids in the set
`reap_orphans` keeps. Its steps run in the same pass, each under `_isolated`.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Histogram
from sqlalchemy import ColumnElement, Executable
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, SQLModel, col, select

from alignd import auth, runs
from alignd.config import Settings
from alignd.contract import ExitCode, JobSpec
from alignd.db import guarded_update
from alignd.errors import AligndError
from alignd.jobs import quotas
from alignd.jobs.lifecycle import JobStatus, RunEndReason, RunKind, error_code
from alignd.jobs.results import results_csv, store_results_file
from alignd.jobs.start import base_model_id
from alignd.jobs.state import record_event, transition
from alignd.launchers import Launcher, RunState, RunStatus
from alignd.leader import Lease
from alignd.models import JobModel, ProjectModel, RunModel, unix_now
from alignd.storage import ObjectStore
from alignd.sweeper import Sweeper

log = logging.getLogger("alignd.controller")
MAX_RETRIES = 2
STEPS = {
    "launch": "launch the run",
    "sync": "sync the run's state",
    "stop": "stop the run",
    "keep_logs": "keep the trainer's logs",
    "after_success": "start the runs of the job's evals",
}
"""How a failed step reads in the job's events."""


class OwnerSteps(Protocol):
    """Another kind of run owner's reconcile steps (its rows, its runs), run in the controller's pass."""

    def reconcile_once(self) -> None: ...

    def live_owner_ids(self) -> set[str]:
        """Owner ids whose runs may be live, so `reap_orphans` leaves them alone."""
        ...

    def job_succeeded(self, job: JobModel) -> None:
        """Called once, by the controller that moved `job` to succeeded (evals to run after training)."""
        ...


@dataclass
class Controller:
    sessions: sessionmaker[Session]
    launcher: Launcher
    store: ObjectStore
    settings: Settings
    clock: Callable[[], float] = time.time
    pass_seconds: Histogram | None = None
    lease: Lease | None = None
    """With several API replicas, only the lease holder reconciles (ALIGND_LEADER_ELECTION)."""
    owners: Sequence[OwnerSteps] = ()
    """Steps of other run owners (eval runs: `alignd.evals.execution.EvalExecutor`), in the same pass."""
    sweeper: Sweeper | None = None
    """Run by the leader every `sweeper_interval_seconds` (`alignd.sweeper`)."""

    _was_leader: bool = False
    _failing: dict[tuple[str, str], str] = field(default_factory=dict)
    """(job id, step) -> the kind of error that step last failed with, so an outage is one event."""
    _logs_owed: dict[str, tuple[str, RunModel, bytes | None]] = field(default_factory=dict)
    """Run id -> (its job's id, the run, its logs once read) of ended runs whose logs the store has not
    taken yet. The bytes are kept once read: a cluster may remove a finished run's pods meanwhile."""
    _noticed: dict[str, set[str]] = field(default_factory=dict)
    """Run id -> launcher notices already recorded as events, so each is one event per run."""
    _next_sweep: float = 0.0

    def reconcile_once(self) -> None:
        self.schedule()
        self.sync_active()
        self.stop_cancelled()
        self.keep_owed_logs()
        for owner in self.owners:
            try:
                owner.reconcile_once()
            except Exception:
                log.exception("the %s step failed; retrying on the next pass", type(owner).__name__)
        self.reap_orphans()

    # ---- queued: start a run -------------------------------------------------------------------------

    def schedule(self) -> None:
        with self.sessions() as session:
            queued = list(
                session.exec(
                    select(JobModel)
                    .where(col(JobModel.status) == JobStatus.queued)
                    .order_by(col(JobModel.priority).desc(), col(JobModel.created_at))
                )
            )
            usage = quotas.usage_by_project(session, JobStatus.active())
            limits = {p.id: quotas.job_quota(p, self.settings) for p in session.exec(select(ProjectModel))}
        for job in queued:
            used = usage.get(job.project_id, quotas.Usage())
            if quotas.exceeded(limits[job.project_id], used, gpus=job.gpus) is not None:
                continue
            with self._isolated(job.id, "launch"):
                if self._start(job):
                    usage[job.project_id] = used.plus(job.gpus)

    def _start(self, job: JobModel) -> bool:
        """A new run row commits with the move to running; then the launch, with no session open."""
        token, token_hash = auth.new_job_token()
        run = runs.new_run(
            kind=RunKind.train,
            job_id=job.id,
            attempt=job.attempt + 1,
            token_hash=token_hash,
            now=int(self.clock()),
        )
        with self.sessions() as session:
            started = transition(
                session,
                job.id,
                to=JobStatus.running,
                expected_lock=job.lock_token,
                event=f"Job started (attempt {run.attempt})",
                fields={"attempt": run.attempt, "desired": None},
                rows=[run],
            )
        if started is None:
            return False
        env = runs.trainer_env(self.settings, job.id, token)
        try:
            ref = self.launcher.launch(
                runs.launch_request(run, spec=JobSpec.model_validate(job.spec), env=env)
            )
        except Exception as exc:
            log.exception("launch of %s failed", job.id)
            self._finish(
                started,
                run,
                JobStatus.failed,
                "Launch failed",
                end=RunEndReason.launch_failed,
                error={
                    "code": RunEndReason.launch_failed.error_code,
                    "message": f"the launcher could not start the run: {exc}",
                },
            )
            return False
        self._write(runs.launched(run.id, ref))
        return True

    # ---- running, pausing: sync the run ---------------------------------------------------------------

    def sync_active(self) -> None:
        with self.sessions() as session:
            active = _with_runs(session, col(JobModel.status).in_(JobStatus.active()))
        for job, run in active:
            with self._isolated(job.id, "sync"):
                self._sync(job, run)

    def _sync(self, job: JobModel, run: RunModel) -> None:
        status = runs.poll(self.launcher, run)
        self._record_notices(job.id, run, status.notices)
        if status.state is RunState.pending:
            self._hold_heartbeat(run)
        elif status.state is RunState.running:
            self._check_deadlines(job, run)
        else:
            self._settle(job, run, status)
            self._noticed.pop(run.id, None)

    def _record_notices(self, job_id: str, run: RunModel, notices: list[str]) -> None:
        """Each notice becomes one job event per run, not one per pass."""
        seen = self._noticed.setdefault(run.id, set())
        for notice in notices:
            if notice not in seen:
                self._event(job_id, notice, level="warn")
                seen.add(notice)

    def _hold_heartbeat(self, run: RunModel) -> None:
        """A run that has not started (a queue holds it, its pods wait for a node) cannot be silent: the
        launcher's pending deadline governs it, and its trainer gets a whole heartbeat window once it
        starts. The row is touched once per half window, not on every pass."""
        now = self.clock()
        if runs.heartbeat_due(run, now=now, heartbeat_timeout=self.settings.heartbeat_timeout_seconds):
            self._write(runs.heartbeat(run.id, int(now)))

    def _check_deadlines(self, job: JobModel, run: RunModel) -> None:
        max_runtime = (
            None
            if self.launcher.enforces_max_runtime
            else JobSpec.model_validate(job.spec).max_runtime_seconds
        )
        over = runs.overdue(
            run,
            now=self.clock(),
            heartbeat_timeout=self.settings.heartbeat_timeout_seconds,
            max_runtime=max_runtime,
            runtime_since=job.started_at,
        )
        if over is None:
            return
        reason, message = over
        runs.terminate(self.launcher, run, grace_seconds=self.settings.cancel_grace_seconds)
        self._finish(
            job,
            run,
            JobStatus.failed,
            f"Job failed: {message}",
            end=reason,
            error={"code": reason.error_code, "message": message},
        )

    def _settle(self, job: JobModel, run: RunModel, status: RunStatus) -> None:
        """The run ended: succeeded, paused, re-queued for a retry, or failed with its reason. A success
        waits for its results file to be stored (it is part of the success); the rest need no store."""
        self._keep_logs(job.id, run)
        if status.state is not RunState.succeeded and runs.holds_resources(self.launcher, run):
            # A run failed while still holding resources (pods that cannot schedule or pull): free them.
            runs.terminate(self.launcher, run, grace_seconds=self.settings.cancel_grace_seconds)
        end = runs.end_reason(status)
        if status.state is RunState.succeeded:
            name = f"ft:{base_model_id(job)}:{job.project_id}:{job.suffix or 'alignd'}:{job.id}"
            with self.sessions() as session:
                data = results_csv(session, job)
            results = store_results_file(self.store, job, data)
            succeeded = self._finish(
                job,
                run,
                JobStatus.succeeded,
                "The job has successfully completed",
                end=end,
                exit_code=status.exit_code,
                fields={"fine_tuned_model": name, "result_files": [results.id]},
                rows=[results],
            )
            for owner in self.owners:
                if succeeded is not None:
                    with self._isolated(job.id, "after_success"):
                        owner.job_succeeded(succeeded)
        elif job.status is JobStatus.pausing and (
            status.exit_code == ExitCode.TERMINATED or status.reason == RunEndReason.lost
        ):
            # A run stopped before its trainer could checkpoint resumes from its last checkpoint, if any.
            self._finish(
                job,
                run,
                JobStatus.paused,
                "Job paused; resume continues from the last checkpoint",
                end=end,
                exit_code=status.exit_code,
            )
        elif runs.retriable(status) and job.retries < MAX_RETRIES and job.status is JobStatus.running:
            self._finish(
                job,
                run,
                JobStatus.queued,
                f"Run ended ({status.reason}: {status.message}); retrying from the last checkpoint",
                end=end,
                exit_code=status.exit_code,
                level="warn",
                fields={"retries": job.retries + 1},
            )
        else:
            message = status.message or "the run failed"
            self._finish(
                job,
                run,
                JobStatus.failed,
                f"Job failed: {message}",
                end=end,
                exit_code=status.exit_code,
                error={"code": error_code(status.reason), "message": message},
            )

    # ---- logs ----------------------------------------------------------------------------------------

    def _keep_logs(self, job_id: str, run: RunModel) -> None:
        """Copy the ended run's logs to the store; if that fails, owe them and keep them on a later pass
        (`keep_owed_logs`), so a store outage does not hold the job's own move back."""
        self._logs_owed[run.id] = (job_id, run, None)
        self._keep_owed(run.id)

    def keep_owed_logs(self) -> None:
        for run_id in list(self._logs_owed):
            self._keep_owed(run_id)

    def _keep_owed(self, run_id: str) -> None:
        job_id, run, logs = self._logs_owed[run_id]
        with self._isolated(job_id, "keep_logs"):
            if logs is None:
                logs = self.launcher.logs(runs.owner_id(run), run.launcher_ref)
                self._logs_owed[run_id] = (job_id, run, logs)
            if logs is not None:
                key = runs.logs_key(run)
                self.store.put_bytes(key, logs)
                self._write(runs.logs_kept(run_id, key))
            del self._logs_owed[run_id]

    # ---- cancelled, pausing: stop the run ------------------------------------------------------------

    def stop_cancelled(self) -> None:
        with self.sessions() as session:
            wanted = _with_runs(
                session,
                ((col(JobModel.status) == JobStatus.cancelled) & (JobModel.desired == "cancel"))
                | ((col(JobModel.status) == JobStatus.pausing) & (JobModel.desired == "pause")),
            )
        for job, run in wanted:
            with self._isolated(job.id, "stop"):
                runs.terminate(self.launcher, run, grace_seconds=self.settings.cancel_grace_seconds)
                ended = []
                if job.status is JobStatus.cancelled:
                    self._keep_logs(job.id, run)
                    self._noticed.pop(run.id, None)
                    ended = [
                        runs.ended(
                            run.id, reason=RunEndReason.cancelled, exit_code=None, now=int(self.clock())
                        )
                    ]
                self._set(job, statements=ended, desired=None)

    def reap_orphans(self) -> None:
        """Stop live runs no active job owns. The launcher reports only this installation's runs
        (ALIGND_K8S_RELEASE), so another installation's in the same namespace are never orphans here."""
        live = self.launcher.active_job_ids()
        if not live:
            return
        with self.sessions() as session:
            active = set(
                session.exec(
                    select(JobModel.id).where(
                        col(JobModel.id).in_(live), col(JobModel.status).in_(JobStatus.active())
                    )
                )
            )
        for owner in self.owners:
            active |= owner.live_owner_ids()
        for job_id in live - active:
            log.warning("terminating orphaned run of %s", job_id)
            try:
                self.launcher.terminate(job_id, None, grace_seconds=self.settings.cancel_grace_seconds)
            except Exception:
                log.exception("could not terminate the orphaned run of %s; retrying on the next pass", job_id)

    # ---- writes --------------------------------------------------------------------------------------

    def _finish(
        self,
        job: JobModel,
        run: RunModel,
        to: JobStatus,
        event: str,
        *,
        end: RunEndReason,
        exit_code: int | None = None,
        error: dict[str, str] | None = None,
        fields: dict[str, object] | None = None,
        level: str = "info",
        rows: Sequence[SQLModel] = (),
    ) -> JobModel | None:
        """Move the job on and end its run, if nobody moved the job since we read it; `rows` are inserted
        in the same transaction. Returns the moved job, or None when the move was dropped."""
        values = dict(fields or {}) | ({"error": error} if error else {})
        with self.sessions() as session:
            return transition(
                session,
                job.id,
                to=to,
                expected_lock=job.lock_token,
                event=event,
                level="error" if error else level,
                fields=values,
                rows=rows,
                statements=[runs.ended(run.id, reason=end, exit_code=exit_code, now=int(self.clock()))],
            )

    def _set(self, job: JobModel, *, statements: Sequence[Executable] = (), **fields: object) -> None:
        """Non-status fields (and `statements`), only if nobody moved the job since we read it."""
        with self.sessions() as session:
            moved = session.execute(guarded_update(JobModel, job.id, job.lock_token).values(**fields))
            if moved.rowcount == 1:  # type: ignore[attr-defined]
                for statement in statements:
                    session.execute(statement)
            session.commit()

    def _write(self, statement: Executable) -> None:
        """One guarded run write (`alignd.runs`), in its own short transaction."""
        with self.sessions() as session:
            session.execute(statement)
            session.commit()

    def _event(self, job_id: str, message: str, *, level: str = "info") -> None:
        with self.sessions() as session:
            record_event(session, job_id, message, level=level)

    # ---- isolation -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _isolated(self, job_id: str, step: str) -> Iterator[None]:
        """Run one job's step; an exception ends that step only, and becomes an event on the job the
        first time the step fails that way (a long outage is one event, not one per pass)."""
        try:
            yield
        except Exception as exc:
            self._step_failed(job_id, step, exc)
        else:
            self._failing.pop((job_id, step), None)

    def _step_failed(self, job_id: str, step: str, exc: Exception) -> None:
        kind = type(exc).__name__
        if self._failing.get((job_id, step)) == kind:
            log.debug("%s of job %s still failing (%s); retrying on the next pass", step, job_id, kind)
            return
        log.exception("%s of job %s failed; retrying on the next pass", step, job_id)
        self._failing[(job_id, step)] = kind
        detail = exc.message if isinstance(exc, AligndError) else kind
        try:
            self._event(
                job_id,
                f"The controller could not {STEPS.get(step, step)} ({detail}); it retries on its next pass",
                level="warn",
            )
        except Exception:
            log.exception("could not record the failure of %s on job %s", step, job_id)

    # ---- the loop ------------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        if self.lease is None:
            return True
        leader = self.lease.acquire()
        if leader != self._was_leader:
            log.info("controller %s leadership (%s)", "took" if leader else "lost", self.lease.holder)
            self._was_leader = leader
        return leader

    def sweep_if_due(self) -> None:
        """The leader's sweeper pass, every `sweeper_interval_seconds` (the first one at start)."""
        now = time.monotonic()
        if self.sweeper is None or now < self._next_sweep:
            return
        self._next_sweep = now + self.settings.sweeper_interval_seconds
        try:
            self.sweeper.sweep()
        except Exception:
            log.exception("sweeper pass failed; retrying in %.0f s", self.settings.sweeper_interval_seconds)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if self.is_leader():
                    self.reconcile_once()
                    self.sweep_if_due()
            except Exception:
                log.exception("reconcile pass failed; retrying")
            if self.pass_seconds is not None:
                self.pass_seconds.observe(time.monotonic() - started)
            stop.wait(max(0.0, self.settings.controller_interval_seconds - (time.monotonic() - started)))
        if self.lease is not None and self._was_leader:
            self.lease.release()
        self.launcher.close()


def _with_runs(session: Session, where: ColumnElement[bool]) -> list[tuple[JobModel, RunModel]]:
    """The jobs matching `where`, each with its latest run. A job that has none (started by a release
    before runs had rows, or never launched) gets a stand-in row no guarded write matches."""
    rows = session.exec(
        select(JobModel, RunModel)
        .outerjoin(
            RunModel,
            (col(RunModel.job_id) == col(JobModel.id)) & (col(RunModel.attempt) == col(JobModel.attempt)),
        )
        .where(where)
    )
    return [
        (
            job,
            run
            or RunModel(
                kind=RunKind.train,
                job_id=job.id,
                attempt=job.attempt,
                started_at=job.started_at or unix_now(),
            ),
        )
        for job, run in rows
    ]
