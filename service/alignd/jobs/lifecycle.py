"""A job's life in types: its statuses, the moves between them, and why a run ended.

Every module asks `JobStatus` (is it terminal? active? does it count against a quota? what does the
openai SDK see?) instead of keeping its own set of status strings, and every run-end reason maps to the
user-facing error code here. Adding a status means a member plus its cases below (mypy's exhaustiveness
check on the `match` statements names any case left out) and its row in `ALLOWED`. Status changes go
through `alignd.jobs.state.transition`, the one door.

    validating_files -> queued | failed | cancelled
    queued           -> running | failed | cancelled
    running          -> succeeded | failed | cancelled | pausing | queued (retriable failure)
    pausing          -> paused | succeeded | failed | cancelled
    paused           -> queued (resume) | cancelled

Pure: no database, no I/O, so the CLI's client and the table classes can import it.
"""

from enum import StrEnum
from typing import Literal, assert_never

WireStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
"""OpenAI's six job statuses; alignd's pausing and paused read as running and queued."""


class JobStatus(StrEnum):
    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    pausing = "pausing"
    """Asked to stop after a checkpoint; the run is still alive."""
    paused = "paused"
    """Stopped with a checkpoint; resuming re-queues it and the trainer continues from there."""
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def wire(self) -> WireStatus:
        """What the openai SDK sees in `status`; alignd's own status is in `alignd.status`."""
        match self:
            case JobStatus.validating_files:
                return "validating_files"
            case JobStatus.queued | JobStatus.paused:
                return "queued"
            case JobStatus.running | JobStatus.pausing:
                return "running"
            case JobStatus.succeeded:
                return "succeeded"
            case JobStatus.failed:
                return "failed"
            case JobStatus.cancelled:
                return "cancelled"
            case _:
                assert_never(self)

    @property
    def is_terminal(self) -> bool:
        """A status the job never leaves."""
        match self:
            case JobStatus.succeeded | JobStatus.failed | JobStatus.cancelled:
                return True
            case (
                JobStatus.validating_files
                | JobStatus.queued
                | JobStatus.running
                | JobStatus.pausing
                | JobStatus.paused
            ):
                return False
            case _:
                assert_never(self)

    @property
    def is_active(self) -> bool:
        """A live run holds resources: the statuses a job token is valid in, that the controller syncs
        with its launcher, and that count against a project's quota when scheduling."""
        match self:
            case JobStatus.running | JobStatus.pausing:
                return True
            case (
                JobStatus.validating_files
                | JobStatus.queued
                | JobStatus.paused
                | JobStatus.succeeded
                | JobStatus.failed
                | JobStatus.cancelled
            ):
                return False
            case _:
                assert_never(self)

    @property
    def counts_for_quota(self) -> bool:
        """What a new job's creation is checked against: jobs waiting for or holding resources. A paused
        job holds none; it counts again once resumed."""
        return self is JobStatus.queued or self.is_active

    @property
    def verb(self) -> str:
        """How a refused move into this status reads: "job ftjob-x is succeeded; it cannot be <verb>"."""
        match self:
            case JobStatus.validating_files:
                return "validated again"
            case JobStatus.queued:
                return "resumed"
            case JobStatus.running:
                return "started"
            case JobStatus.pausing | JobStatus.paused:
                return "paused"
            case JobStatus.succeeded:
                return "marked succeeded"
            case JobStatus.failed:
                return "marked failed"
            case JobStatus.cancelled:
                return "cancelled"
            case _:
                assert_never(self)

    @classmethod
    def terminal(cls) -> frozenset["JobStatus"]:
        return frozenset(s for s in cls if s.is_terminal)

    @classmethod
    def active(cls) -> frozenset["JobStatus"]:
        return frozenset(s for s in cls if s.is_active)

    @classmethod
    def in_quota(cls) -> frozenset["JobStatus"]:
        return frozenset(s for s in cls if s.counts_for_quota)


ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.validating_files: frozenset({JobStatus.queued, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.pausing, JobStatus.queued}
    ),
    JobStatus.pausing: frozenset(
        {JobStatus.paused, JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
    ),
    JobStatus.paused: frozenset({JobStatus.queued, JobStatus.cancelled}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}
"""The allowed moves; a test checks every status has a row and that terminal rows are empty."""


def is_allowed(current: JobStatus | str, to: JobStatus | str) -> bool:
    return JobStatus(to) in ALLOWED[JobStatus(current)]


class RunKind(StrEnum):
    """What a run (`alignd.models.RunModel`, one row per attempt) does, and so which trainer module the
    launchers start (`alignd.launchers.base.trainer_module`)."""

    train = "train"
    """An attempt of a fine-tuning job (`RunModel.job_id`)."""
    evaluate = "evaluate"
    """An attempt of an evaluation run (`RunModel.eval_run_id`)."""


class RunEndReason(StrEnum):
    """Why a run ended or could not go on, as launchers, the trainer and the controller name it.

    Values are the names launchers report in `RunStatus.reason` (the trainer's termination reasons and
    Kubernetes' own) plus the controller's own ends; `error_code` is what a user sees in the failed job's
    `error.code`. A run row's `end_reason` is always a member: `RunEndReason.of` files a reason of a
    launcher's own under `failed`."""

    succeeded = "Succeeded"
    failed = "Failed"
    """Ended with a reason no member names (a Kubernetes condition, a trainer's own)."""
    cancelled = "Cancelled"
    """Stopped because its owner was cancelled."""

    lost = "Lost"
    """The launcher has no trace of the run: a node went away, the server restarted a local run."""
    oom_killed = "OOMKilled"
    """The kernel killed the trainer for memory."""
    out_of_memory = "OutOfMemory"
    """The trainer caught a GPU out-of-memory error."""
    unschedulable = "Unschedulable"
    image_pull = "ImagePullBackOff"
    crash_loop = "CrashLoopBackOff"
    deadline_exceeded = "DeadlineExceeded"
    """The launcher stopped the run at max_runtime_seconds."""
    bad_input = "BadInput"
    invalid_data = "InvalidData"
    infrastructure = "Infrastructure"
    terminated = "Terminated"
    """SIGTERM: a cancel, a pause, or a preemption."""
    launch_failed = "LaunchFailed"
    """The launcher refused to start the run."""
    trainer_silent = "TrainerSilent"
    """No report within the heartbeat timeout."""
    max_runtime = "MaxRuntimeExceeded"
    """The controller stopped the run at max_runtime_seconds."""

    @classmethod
    def parse(cls, reason: str | None) -> "RunEndReason | None":
        """The member a launcher's reason names, or None for a reason of its own (or none)."""
        try:
            return None if reason is None else cls(reason)
        except ValueError:
            return None

    @classmethod
    def of(cls, *, succeeded: bool, reason: str | None) -> "RunEndReason":
        """The member a finished run is filed under: its launcher's reason where a member names it."""
        if succeeded:
            return cls.succeeded
        return cls.parse(reason) or cls.failed

    @property
    def error_code(self) -> str:
        match self:
            case RunEndReason.launch_failed:
                return "launch_failed"
            case RunEndReason.trainer_silent:
                return "trainer_silent"
            case RunEndReason.max_runtime:
                return "max_runtime_exceeded"
            case _:
                return self.value.lower()

    @property
    def retriable(self) -> bool:
        """Worth another attempt from the last checkpoint whatever the exit code said."""
        return self is RunEndReason.lost


def error_code(reason: str | None) -> str:
    """The user-facing `error.code` of a run that ended with launcher reason `reason`: a known reason's
    code, else the reason lowercased (a Kubernetes condition reason, a trainer's own), else "failed"."""
    if (known := RunEndReason.parse(reason)) is not None:
        return known.error_code
    return "failed" if reason is None else reason.lower()
