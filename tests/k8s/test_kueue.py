"""Kueue on the Kubernetes launcher, against kmock and the test kubelet (which plays Kueue by
unsuspending a Job): a run waits in its queue, queued, as long as Kueue holds it, says why, and starts
(with its pending deadline starting then) once admitted."""

import time
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from sqlmodel import Session

from alignd.config import Settings
from alignd.controller import Controller
from alignd.jobs.state import JobStatus
from alignd.launchers.k8s_manifests import QUEUE_LABEL, job_name
from alignd.models import JobModel
from tests.db.factories import make_job
from tests.k8s.cluster import Kubelet, PodScript, wait_for
from tests.k8s.conftest import NAMESPACE, RELEASE, Scripts
from tests.k8s.helpers import SPEC, drive, events, k8s_jobs, pods_of, queued


class Clock:
    """Real time plus a jump the test makes: an hour in a queue without waiting an hour."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def k8s_settings(k8s_settings: Settings) -> Settings:
    return k8s_settings.model_copy(update={"k8s_kueue_queue_name": "ml-default"})


@pytest.fixture
def kueue_controller(make_controller: Callable[[], Controller], clock: Clock, kubelet: Kubelet) -> Controller:
    """Controller, launcher and the cluster's Job controller on one clock."""
    controller = make_controller()
    controller.clock = clock
    controller.launcher.clock = clock  # type: ignore[attr-defined]
    kubelet.clock = clock
    return controller


def workload_event(api: ApiClient, run: str, message: str) -> None:
    """What Kueue records on the Job's Workload while the queue has no room."""
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"job-{run}-7f3a2.pending", "namespace": NAMESPACE},
        "involvedObject": {"kind": "Workload", "name": f"job-{run}-7f3a2", "namespace": NAMESPACE},
        "reason": "Pending",
        "message": message,
        "type": "Normal",
        "lastTimestamp": "2027-01-15T08:00:00Z",
    }
    client.CoreV1Api(api).create_namespaced_event(NAMESPACE, body)


def test_a_job_kueue_holds_stays_queued_past_the_pending_deadline_and_runs_once_admitted(
    kueue_controller: Controller,
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
    clock: Clock,
) -> None:
    controller = kueue_controller
    job = make_job(session, status=JobStatus.queued, spec=SPEC | {"max_runtime_seconds": 600})
    run = job_name(job.id, 1, RELEASE)
    scripts[run] = [PodScript("hold")]
    drive(controller, session, job.id, {"running"})
    created = k8s_jobs(api)[run]
    assert created.spec.suspend is True and created.metadata.labels[QUEUE_LABEL] == "ml-default"
    reason = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu"
    workload_event(api, run, reason)

    clock.skipped = 3600  # an hour in the queue: past the pending deadline, heartbeat timeout and max runtime
    wait_for(
        lambda: (controller.reconcile_once(), any(reason in e for e in events(session, job.id)))[1],
        10,
        "Kueue's reason as a job event",
    )
    controller.reconcile_once()
    session.expire_all()
    held = session.get(JobModel, job.id)
    assert held is not None and held.status == "running" and held.error is None, events(session, job.id)
    assert any(e.startswith("Queued: waiting for Kueue queue ml-default") for e in events(session, job.id))
    assert not pods_of(api, run), "a suspended Job has no pods"

    kubelet.admit(run)
    wait_for(lambda: len(pods_of(api, run)) == 1, 10, "the trainer pod once admitted")
    for _ in range(5):
        controller.reconcile_once()
    session.expire_all()
    admitted = session.get(JobModel, job.id)
    assert admitted is not None and admitted.status == "running", events(session, job.id)
    scripts[run] = [PodScript("succeed")]
    done = drive(controller, session, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded", events(session, job.id)
    assert done.attempt == 1 and done.retries == 0


def test_an_admitted_job_whose_pods_cannot_schedule_fails_at_the_deadline_counted_from_admission(
    kueue_controller: Controller,
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
    clock: Clock,
) -> None:
    controller = kueue_controller
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    scripts[run] = [PodScript("unschedulable")]
    drive(controller, session, job.id, {"running"})
    clock.skipped = 3600
    controller.reconcile_once()
    kubelet.admit(run)
    wait_for(lambda: len(pods_of(api, run)) == 1, 10, "the trainer pod once admitted")
    controller.reconcile_once()
    session.expire_all()
    waiting = session.get(JobModel, job.id)
    assert waiting is not None and waiting.status == "running", "an hour queued is not an hour pending"

    clock.skipped += 60  # past the 6 s pending deadline, counted from admission
    failed = drive(controller, session, job.id, {"failed"})
    assert failed.error is not None and failed.error["code"] == "unschedulable"
