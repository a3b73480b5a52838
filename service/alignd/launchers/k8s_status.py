"""What a run's Kubernetes Job and pods say about it, as a RunStatus (pure: dicts in, status out).

The reasons users of other schedulers miss most are surfaced here: why a pod cannot schedule,
an image that cannot be pulled, an OOM kill, and the trainer's own termination message.

A suspended Job (Kueue holds it until its queue has quota) is queued: pending with no deadline; the
pending deadline starts when it is admitted (unsuspended), not when it was created.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from alignd.contract import TerminationSummary
from alignd.launchers.base import RunState, RunStatus
from alignd.launchers.k8s_manifests import CONTAINER, QUEUE_LABEL

Obj = dict[str, Any]

IMAGE_FAILURES = ("ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
"""Waiting reasons that will not fix themselves: kubelet already retried, or never can."""
OOM_MESSAGE = (
    "the trainer was killed for using more memory than its limit (OOMKilled); lower batch_size or "
    "max_length, enable gradient_checkpointing, or raise resources.memory"
)


def timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _true_conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in _status(obj).get("conditions") or [] if c.get("status") == "True"}


def newest_first(pods: Iterable[Obj]) -> list[Obj]:
    return sorted(pods, key=lambda p: timestamp(_meta(p).get("creationTimestamp")) or 0.0, reverse=True)


def _trainer_state(pod: Obj) -> Obj:
    for status in _status(pod).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status.get("state") or {}
    return {}


def run_status(job: Obj | None, pods: list[Obj], *, now: float, pending_deadline: float) -> RunStatus:
    if job is None:
        return RunStatus(
            RunState.missing,
            reason="Lost",
            message="the run's Kubernetes Job is gone (deleted outside alignd, or never created)",
        )
    if _meta(job).get("deletionTimestamp"):
        return RunStatus(RunState.running, message="stopping")
    pods = newest_first(pods)
    conditions = _true_conditions(job)
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return RunStatus(RunState.succeeded, exit_code=0)
    if "Failed" in conditions or "FailureTarget" in conditions:
        return _failure(conditions.get("Failed") or conditions["FailureTarget"], pods)
    notices = _disruptions(pods)
    if is_suspended(job):
        return RunStatus(RunState.pending, notices=[*notices, queued_notice(job)])
    if pods:
        waiting = _trainer_state(pods[0]).get("waiting") or {}
        if waiting.get("reason") in IMAGE_FAILURES:
            image_message = waiting.get("message") or "the registry refused it"
            return RunStatus(
                RunState.failed,
                reason="ImagePullBackOff",
                message=f"the trainer image cannot be pulled ({waiting['reason']}: {image_message}); "
                "check ALIGND_K8S_TRAINER_IMAGE and ALIGND_K8S_IMAGE_PULL_SECRETS",
            )
        if waiting.get("reason") == "CrashLoopBackOff":
            return RunStatus(
                RunState.failed,
                reason="CrashLoopBackOff",
                message="the trainer container keeps crashing as it starts "
                f"({waiting.get('message') or 'no message'}); its log is kept with the job",
            )
        if any(_status(p).get("phase") == "Running" for p in pods):
            return RunStatus(RunState.running, notices=notices)
    return _pending(job, pods, notices, now=now, pending_deadline=pending_deadline)


def _pending(
    job: Obj, pods: list[Obj], notices: list[str], *, now: float, pending_deadline: float
) -> RunStatus:
    waits = [_why_waiting(pod) for pod in pods[:1]]
    notices = notices + [w for w in waits if w]
    since = timestamp(_meta(pods[0]).get("creationTimestamp")) if pods else admitted_at(job)
    since = since or now
    if now - since > pending_deadline:
        why = waits[0] if waits and waits[0] else "no trainer pod was created (check the Job's events)"
        return RunStatus(
            RunState.failed,
            reason="Unschedulable",
            message=f"the run did not start within {int(pending_deadline)}s "
            f"(ALIGND_K8S_PENDING_DEADLINE_SECONDS): {why}",
        )
    return RunStatus(RunState.pending, notices=notices)


def is_suspended(job: Obj) -> bool:
    """Held by its queue; also just after admission, until the Job controller records the resume."""
    return bool((job.get("spec") or {}).get("suspend")) or "Suspended" in _true_conditions(job)


def queued_notice(job: Obj) -> str:
    queue = (_meta(job).get("labels") or {}).get(QUEUE_LABEL)
    where = f"Kueue queue {queue}" if queue else "a queue"
    return f"Queued: waiting for {where} to admit the run (its Job is suspended until then)"


def admitted_at(job: Obj) -> float | None:
    """When the Job last left suspension (the Job controller resets startTime then), else its creation."""
    for condition in _status(job).get("conditions") or []:
        if condition.get("type") == "Suspended" and condition.get("status") == "False":
            resumed = timestamp(condition.get("lastTransitionTime"))
            if resumed is not None:
                return resumed
    return timestamp(_status(job).get("startTime")) or timestamp(_meta(job).get("creationTimestamp"))


def _why_waiting(pod: Obj) -> str | None:
    for condition in _status(pod).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return f"Waiting for a node ({reason}): {condition.get('message') or 'no reason given'}"
    waiting = _trainer_state(pod).get("waiting") or {}
    if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
        return f"Trainer container waiting ({waiting['reason']}): {waiting.get('message') or ''}".rstrip(": ")
    return None


def _disruptions(pods: list[Obj]) -> list[str]:
    notices = []
    for pod in pods:
        condition = _true_conditions(pod).get("DisruptionTarget")
        if condition is not None:
            notices.append(
                f"Trainer pod {_meta(pod).get('name')} was disrupted ({condition.get('reason')}: "
                f"{condition.get('message') or 'no message'}); a new pod resumes from the last checkpoint"
            )
    return notices


def _failure(condition: Obj, pods: list[Obj]) -> RunStatus:
    for pod in pods:
        terminated = _trainer_state(pod).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0:
            return _from_terminated(terminated)
    reason = condition.get("reason") or "Failed"
    if reason == "DeadlineExceeded":
        return RunStatus(
            RunState.failed, reason="DeadlineExceeded", message="the run ran past max_runtime_seconds"
        )
    return RunStatus(RunState.failed, reason=reason, message=condition.get("message") or "the Job failed")


def _from_terminated(terminated: Obj) -> RunStatus:
    exit_code = int(terminated.get("exitCode", 1))
    if terminated.get("reason") == "OOMKilled":
        return RunStatus(RunState.failed, exit_code=exit_code, reason="OOMKilled", message=OOM_MESSAGE)
    text = (terminated.get("message") or "").strip()
    try:
        summary = TerminationSummary.model_validate_json(text)
    except ValidationError:
        message = text[-2000:] or f"the trainer exited with code {exit_code}"
        return RunStatus(
            RunState.failed, exit_code=exit_code, reason=terminated.get("reason"), message=message
        )
    return RunStatus(
        RunState.failed, exit_code=summary.exit_code, reason=summary.reason, message=summary.message
    )
