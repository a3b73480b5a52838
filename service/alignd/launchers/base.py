"""The Launcher protocol: how the controller starts, watches and stops a trainer run.

Implementations are boring and safe to repeat (STYLE rule 7): names derive from the job id,
launch creates only if absent, terminate treats "not found" as success, and no call holds a
database transaction.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum

from alignd.contract import JobSpec


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
    """Things worth a job event while pending or running (e.g. why a pod cannot schedule)."""


@dataclass(frozen=True)
class LaunchRequest:
    job_id: str
    attempt: int
    spec: JobSpec
    env: dict[str, str]
    """ALIGND_JOB_ID, ALIGND_API_URL, ALIGND_JOB_TOKEN: the trainer's whole contract."""


def run_name(job_id: str) -> str:
    """The deterministic name of a job's run, so a repeated launch finds the first one."""
    return f"alignd-{job_id}".lower().replace("_", "-")


class Launcher(ABC):
    name: str
    enforces_max_runtime: bool = False
    """True when the run itself stops at max_runtime_seconds, counted from when it really started (a
    Kubernetes Job's activeDeadlineSeconds restarts when a queue admits it); the controller's own
    check, counted from launch, would wrongly count time spent queued."""

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
