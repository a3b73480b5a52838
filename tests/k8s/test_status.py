"""What a Job and its pods mean for the job a user watches (pure: no API server needed)."""

from typing import Any

from alignd.launchers.base import RunState
from alignd.launchers.k8s_status import run_status
from tests.k8s.cluster import summary_json

NOW = 1_800_000_120.0
CREATED = "2027-01-15T08:00:00Z"  # two minutes before NOW


def job(*conditions: dict[str, str], deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "alignd-ftjob-1-1", "creationTimestamp": CREATED}
    if deleting:
        metadata["deletionTimestamp"] = CREATED
    return {"metadata": metadata, "status": {"conditions": list(conditions)}}


def pod(phase: str | None, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase} | status
    if state is not None:
        body["containerStatuses"] = [{"name": "trainer", "state": state}]
    return {"metadata": {"name": "p", "creationTimestamp": CREATED}, "status": body}


def status(job_obj: dict[str, Any] | None, *pods: dict[str, Any], deadline: float = 600):
    return run_status(job_obj, list(pods), now=NOW, pending_deadline=deadline)  # type: ignore[no-untyped-def]


def test_a_gone_job_is_missing_and_a_deleting_one_is_still_stopping() -> None:
    assert status(None).state is RunState.missing and status(None).reason == "Lost"
    assert status(job(deleting=True), pod("Running")).state is RunState.running


def test_complete_and_failed_conditions_end_the_run() -> None:
    assert status(job({"type": "Complete", "status": "True"})).state is RunState.succeeded
    failed = status(
        job({"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}),
        pod(
            "Failed", {"terminated": {"exitCode": 65, "message": summary_json(65, "BadInput", "line 3: bad")}}
        ),
    )
    assert (failed.state, failed.exit_code, failed.reason, failed.message) == (
        RunState.failed,
        65,
        "BadInput",
        "line 3: bad",
    )


def test_a_deadline_failure_names_max_runtime() -> None:
    over = status(job({"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}))
    assert over.reason == "DeadlineExceeded" and "max_runtime_seconds" in str(over.message)


def test_a_termination_message_that_is_not_ours_is_shown_as_is() -> None:
    failed = status(
        job({"type": "Failed", "status": "True"}),
        pod("Failed", {"terminated": {"exitCode": 1, "reason": "Error", "message": "Traceback: boom"}}),
    )
    assert failed.exit_code == 1 and failed.message == "Traceback: boom"


def test_waiting_containers_that_cannot_recover_fail_at_once() -> None:
    pull = status(job(), pod("Pending", {"waiting": {"reason": "ErrImageNeverPull", "message": "never"}}))
    crash = status(job(), pod("Pending", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}))
    assert pull.reason == "ImagePullBackOff" and crash.reason == "CrashLoopBackOff"
    assert pull.state is RunState.failed and crash.state is RunState.failed


def test_pending_pods_say_why_until_the_deadline() -> None:
    waiting = pod(
        "Pending",
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "taint x"}
        ],
    )
    early = status(job(), waiting, deadline=10**9)
    assert early.state is RunState.pending and early.notices == [
        "Waiting for a node (Unschedulable): taint x"
    ]
    late = status(job(), waiting, deadline=60)
    assert late.state is RunState.failed and late.reason == "Unschedulable" and "taint x" in str(late.message)


def test_a_job_without_pods_waits_then_fails_saying_so() -> None:
    assert status(job(), deadline=10**9).state is RunState.pending
    assert "no trainer pod was created" in str(status(job(), deadline=60).message)


def test_a_suspended_job_is_queued_past_the_pending_deadline() -> None:
    held = job() | {"spec": {"suspend": True}}
    held["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "ml-default"}
    queued = status(held, deadline=60)
    assert queued.state is RunState.pending
    assert queued.notices == [
        "Queued: waiting for Kueue queue ml-default to admit the run (its Job is suspended until then)"
    ]


def test_the_pending_deadline_starts_when_the_job_is_admitted() -> None:
    """Created two minutes ago, unsuspended (admitted) thirty seconds ago: a 60 s deadline is not over."""
    admitted = {"type": "Suspended", "status": "False", "lastTransitionTime": "2027-01-15T08:01:30Z"}
    resumed = job(admitted) | {"spec": {"suspend": False}}
    assert status(resumed, deadline=60).state is RunState.pending
    assert status(resumed, deadline=20).state is RunState.failed
