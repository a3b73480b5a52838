"""The Launcher protocol: how the controller starts, watches and stops a trainer run.

Implementations are boring and safe to repeat (STYLE rule 7): names derive from the job id,
launch creates only if absent, terminate treats "not found" as success, and no call holds a
database transaction.
"""

from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from typing import Self, assert_never

from alignd.config import Settings
from alignd.contract import JobSpec, Resources
from alignd.jobs.lifecycle import RunKind


class RunState(StrEnum):
    pending = "pending"
    """Accepted but not running yet (a pod waiting for a GPU)."""
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    missing = "missing"
    """The launcher has no trace of the run (lost, or never started)."""


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    exit_code: int | None = None
    reason: str | None = None
    """Short machine-readable cause: OOMKilled, Unschedulable, BadInput, ..."""
    message: str | None = None
    """What a user should read: the trainer's termination message or the scheduler's reason."""
    notices: list[str] = field(default_factory=list)
    """Things worth a job event while pending or running (e.g. why a pod cannot schedule). A launcher
    reports them on every poll while they hold; the controller records each once per attempt."""


@dataclass(frozen=True)
class LaunchRequest:
    job_id: str
    """The run's owner: the job of a training run, the evaluation run of an evaluation. Launchers name
    and find runs by it (with `attempt`), as they always have for jobs."""
    attempt: int
    spec: JobSpec
    env: dict[str, str]
    """ALIGND_JOB_ID, ALIGND_API_URL, ALIGND_JOB_TOKEN (the trainer's contract) and the deployment's
    trainer settings (`runs.trainer_env`)."""
    _: KW_ONLY
    run_id: str
    """The `RunModel` row this launch is (`run-...`)."""
    kind: RunKind = RunKind.train

    @property
    def module(self) -> str:
        """The Python module the run starts (`python -m <module>`)."""
        return trainer_module(self.kind)


def trainer_module(kind: RunKind) -> str:
    """What `python -m` runs for a run of this kind: the trainer, or the evaluator in the same image."""
    match kind:
        case RunKind.train:
            return "alignd_trainer"
        case RunKind.evaluate:
            return "alignd_trainer.evaluate"
        case _:
            assert_never(kind)


class Launcher(ABC):
    """One backend. Registered by name in `alignd.launchers.registry`."""

    name: str
    enforces_max_runtime: bool = False
    """True when the run itself stops at max_runtime_seconds, counted from when it really started (a
    Kubernetes Job's activeDeadlineSeconds restarts when a queue admits it); the controller's own
    check, counted from launch, would wrongly count time spent queued."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The launcher the server runs with these settings; fails fast on settings it cannot work with."""

    @classmethod  # noqa: B027 (optional hook: most backends place anything)
    def check_resources(cls, settings: Settings, resources: Resources) -> None:
        """Raise InvalidRequest, at job creation, for resources this backend could never place (a GPU
        type the cluster has no profile for), so the user learns then rather than at launch."""

    @abstractmethod
    def launch(self, request: LaunchRequest) -> str:
        """Start the run unless it already exists; returns the launcher's reference to it."""

    @abstractmethod
    def poll(self, job_id: str, ref: str | None) -> RunStatus:
        """The run's current state; never raises for a run that is gone (that is `missing`)."""

    @abstractmethod
    def terminate(self, job_id: str, ref: str | None, *, grace_seconds: float) -> None:
        """Ask the run to stop (SIGTERM: the trainer checkpoints), kill after the grace period."""

    @abstractmethod
    def active_job_ids(self) -> set[str]:
        """Job ids this launcher has live runs for, to find orphans after a restart."""

    @abstractmethod
    def logs(self, job_id: str, ref: str | None) -> bytes | None:
        """The run's combined output so far, to keep in the store after the run is gone."""

    def close(self) -> None:  # noqa: B027 (optional hook: most launchers hold nothing to release)
        """Release what the launcher holds (watch threads, connections) when the server stops."""
