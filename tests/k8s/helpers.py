"""What the Kubernetes launcher tests share: a job spec that asks for a GPU profile, driving the controller
until a job reaches a status, reading the emulator's Jobs and pods and a job's events, and the RBAC rules
the launcher needs (which the Helm chart's Role must grant exactly, tests/helm)."""

import time

from kubernetes import client
from kubernetes.client import ApiClient
from sqlmodel import Session, col, select

from alignd.controller import Controller
from alignd.jobs.state import JobStatus
from alignd.models import JobEventModel, JobModel
from tests.db.factories import make_job
from tests.k8s.conftest import NAMESPACE

LAUNCHER_RULES = {("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")} | {
    *(("", "pods", verb) for verb in ("get", "list", "watch")),
    ("", "pods/log", "get"),
    *(("", "events", verb) for verb in ("list", "watch")),
    *(("", "secrets", verb) for verb in ("create", "delete", "get")),
    *(("", "services", verb) for verb in ("create", "delete", "get")),
}
"""(apiGroup, resource, verb) the Kubernetes launcher needs: exactly what the Role may grant."""

SPEC = {"model": "/models/tiny", "training_file": "file-test", "resources": {"gpus": 1, "gpu_type": "h100"}}


def drive(
    controller: Controller, session: Session, job_id: str, until: set[str], timeout: float = 30
) -> JobModel:
    deadline = time.monotonic() + timeout
    while True:
        controller.reconcile_once()
        session.expire_all()
        job = session.get(JobModel, job_id)
        assert job is not None
        if job.status in until:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job.status}; events: {events(session, job_id)}"
        time.sleep(0.05)


def events(session: Session, job_id: str) -> list[str]:
    rows = session.exec(
        select(JobEventModel).where(JobEventModel.job_id == job_id).order_by(col(JobEventModel.id))
    )
    return [row.message for row in rows]


def k8s_jobs(api: ApiClient) -> dict[str, client.V1Job]:
    return {j.metadata.name: j for j in client.BatchV1Api(api).list_namespaced_job(NAMESPACE).items}


def pods_of(api: ApiClient, run: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items
    return [p for p in pods if (p.metadata.labels or {}).get("alignd.dev/run") == run]


def queued(session: Session) -> JobModel:
    return make_job(session, status=JobStatus.queued, spec=SPEC)
