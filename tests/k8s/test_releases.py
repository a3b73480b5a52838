"""Two releases of alignd in one namespace (two servers, two databases, one cluster), and an upgrade
from the version whose Jobs carried no release: each server sees, reaps and settles only its own runs,
and no run is lost or deleted by the other or across the upgrade."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from sqlmodel import Session

from alignd import db
from alignd.config import GpuProfile, Settings
from alignd.contract import JobSpec
from alignd.controller import Controller
from alignd.jobs.state import JobStatus
from alignd.launchers.base import LaunchRequest
from alignd.launchers.k8s_manifests import RELEASE_LABEL, build, job_name
from alignd.launchers.kubernetes import KubernetesLauncher
from alignd.models import JobModel, new_id
from alignd.storage.local import LocalStore
from alignd.storage.signing import UrlSigner
from tests.db.factories import make_job
from tests.k8s.cluster import Kubelet, PodScript, wait_for
from tests.k8s.conftest import NAMESPACE, RELEASE, Scripts
from tests.k8s.helpers import SPEC, events, k8s_jobs

OTHER_RELEASE = "team-b"
LEGACY_SETTINGS = Settings(k8s_gpu_profiles={"h100": GpuProfile(node_selector={"gpu": "h100"})})
"""The default release, "alignd", names Jobs as the version before release labels did."""


@dataclass(eq=False)
class Release:
    controller: Controller
    session: Session

    @property
    def name(self) -> str:
        return self.controller.settings.k8s_release


@pytest.fixture
def team_b(api: ApiClient, k8s_settings: Settings, tmp_path: Path) -> Iterator[Release]:
    """A second installation in the namespace: its own release name, database and store."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'team-b.db'}")
    db.upgrade(engine)
    settings = k8s_settings.model_copy(update={"k8s_release": OTHER_RELEASE})
    launcher = KubernetesLauncher(settings, api, watch_seconds=2)
    store = LocalStore(tmp_path / "team-b-store", signer=UrlSigner(b"b"), public_url="http://127.0.0.1:1")
    sessions = db.session_factory(engine)
    with sessions() as session:
        yield Release(
            Controller(sessions=sessions, launcher=launcher, store=store, settings=settings), session
        )
    launcher.close()
    engine.dispose()


def reconcile_until(controllers: list[Controller], done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for controller in controllers:
            controller.reconcile_once()
        time.sleep(0.05)


def status(session: Session, job_id: str) -> str:
    session.expire_all()
    job = session.get(JobModel, job_id)
    assert job is not None
    return job.status


def move_row_on(session: Session, job_id: str) -> None:
    """The row moved on without its run (restored from a backup, say): the Job is now an orphan."""
    job = session.get(JobModel, job_id)
    assert job is not None
    job.status = JobStatus.succeeded.value
    session.add(job)
    session.commit()


def test_each_release_reaps_only_its_own_orphans_and_both_runs_finish(
    make_controller: Callable[[], Controller],
    session: Session,
    team_b: Release,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    """Each release runs two jobs (one with an id the other database also holds) and has one orphan."""
    team_a = Release(make_controller(), session)
    releases = (team_a, team_b)
    same_id = new_id("ftjob-")
    runs = {
        r: [make_job(r.session, id=same_id, spec=SPEC).id, make_job(r.session, spec=SPEC).id]
        for r in releases
    }
    orphans = {r: make_job(r.session, spec=SPEC).id for r in releases}
    both = [team_a.controller, team_b.controller]
    run_jobs = {job_name(job_id, 1, r.name): r for r in releases for job_id in runs[r]}
    orphan_jobs = {job_name(orphans[r], 1, r.name) for r in releases}
    reconcile_until(both, lambda: set(run_jobs) | orphan_jobs <= set(k8s_jobs(api)), "all six runs to start")
    assert len(run_jobs) == 4, "the two runs of the shared job id got one name"
    for name, release in run_jobs.items():
        assert k8s_jobs(api)[name].metadata.labels["app.kubernetes.io/instance"] == release.name

    for release in releases:
        move_row_on(release.session, orphans[release])
    reconcile_until(both, lambda: not orphan_jobs & set(k8s_jobs(api)), "both orphans to be reaped")

    assert set(run_jobs) <= set(k8s_jobs(api)), "a release deleted the other's running run"
    for release in releases:
        for job_id in runs[release]:
            assert status(release.session, job_id) == "running", events(release.session, job_id)
    for name in run_jobs:
        scripts[name] = [PodScript("succeed")]
    reconcile_until(
        both,
        lambda: all(status(r.session, j) in ("succeeded", "failed") for r in releases for j in runs[r]),
        "all four runs to finish",
    )
    for release in releases:
        for job_id in runs[release]:
            job = release.session.get(JobModel, job_id)
            assert job is not None and job.status == "succeeded", events(release.session, job_id)
            assert job.attempt == 1 and job.retries == 0


def test_a_job_of_the_runs_name_that_another_release_owns_is_not_taken_over(
    make_controller: Callable[[], Controller], session: Session, api: ApiClient
) -> None:
    job = make_job(session, spec=SPEC)
    name = job_name(job.id, 1, RELEASE)
    labels = {RELEASE_LABEL: OTHER_RELEASE, "alignd.dev/job-id": job.id}
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "i"}]}}
        },
    }
    client.BatchV1Api(api).create_namespaced_job(NAMESPACE, foreign)

    make_controller().reconcile_once()

    failed = session.get(JobModel, job.id)
    session.refresh(failed)
    assert failed is not None and failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "launch_failed"
    assert f"belongs to release '{OTHER_RELEASE}'" in failed.error["message"]
    assert "ALIGND_K8S_RELEASE" in failed.error["message"]
    assert k8s_jobs(api)[name].metadata.labels[RELEASE_LABEL] == OTHER_RELEASE


# ---- upgrade from Jobs without a release -----------------------------------------------------------------


def legacy_job(job_id: str) -> dict:  # type: ignore[type-arg]
    """Attempt 1 of a job as the version before release labels made it: named `alignd-<job id>-1`,
    `app.kubernetes.io/instance` the run's name, no `alignd.dev/release`."""
    spec = JobSpec.model_validate(SPEC)
    env = {"ALIGND_JOB_ID": job_id, "ALIGND_API_URL": "http://alignd:8000", "ALIGND_JOB_TOKEN": "t"}
    job = build(LaunchRequest(job_id, 1, spec, env, run_id="run-legacy"), LEGACY_SETTINGS, NAMESPACE).job
    name = job["metadata"]["name"]
    assert name == f"alignd-{job_id}-1"
    labels = {k: v for k, v in job["metadata"]["labels"].items() if k != RELEASE_LABEL}
    labels["app.kubernetes.io/instance"] = name
    job["metadata"]["labels"] = labels
    job["spec"]["template"]["metadata"]["labels"] = labels
    return job


def start_legacy_run(session: Session | None, api: ApiClient, *, recorded: bool = True) -> tuple[str, str]:
    """A run in flight across the upgrade: its Job, and (with a session) its row in that database;
    not `recorded`: the server stopped between creating the Job and saving its name on the row."""
    job_id = new_id("ftjob-")
    body = legacy_job(job_id)
    client.BatchV1Api(api).create_namespaced_job(NAMESPACE, body)
    name: str = body["metadata"]["name"]
    if session is not None:
        now = int(time.time())
        make_job(
            session,
            id=job_id,
            status=JobStatus.running,
            spec=SPEC,
            attempt=1,
            launcher_ref=name if recorded else None,
            started_at=now,
            last_heartbeat_at=now,
        )
    return job_id, name


def test_runs_from_before_release_labels_are_kept_and_finish_after_the_upgrade(
    make_controller: Callable[[], Controller],
    session: Session,
    team_b: Release,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    """Team A's database knows two of the unlabelled runs; the third is nobody's here (another
    release's, from before its own upgrade): neither release may delete it."""
    kept_id, kept = start_legacy_run(session, api)
    moved_id, moved = start_legacy_run(session, api, recorded=False)
    _, stranger = start_legacy_run(None, api)
    wait_for(
        lambda: all(any(p.startswith(f"{n}-") for p in pod_names(api)) for n in (kept, moved, stranger)),
        10,
        "the pre-upgrade runs' pods",
    )

    team_a = make_controller()
    both = [team_a, team_b.controller]
    for _ in range(5):
        for controller in both:
            controller.reconcile_once()
    assert {kept, moved, stranger} <= set(k8s_jobs(api)), "a pre-upgrade run was deleted"
    assert status(session, kept_id) == status(session, moved_id) == "running", events(session, kept_id)
    assert team_a.launcher.active_job_ids() >= {kept_id, moved_id}
    assert not team_b.controller.launcher.active_job_ids() & {kept_id, moved_id}

    move_row_on(session, moved_id)
    reconcile_until(both, lambda: moved not in k8s_jobs(api), "the adopted orphan to be reaped")

    scripts[kept] = [PodScript("succeed", logs="step 9 loss 0.41\n")]
    reconcile_until(both, lambda: status(session, kept_id) in ("succeeded", "failed"), "the kept run to end")
    done = session.get(JobModel, kept_id)
    assert done is not None and done.status == "succeeded" and done.attempt == 1, events(session, kept_id)
    log = b"".join(team_a.store.iter_bytes(f"jobs/{kept_id}/logs/attempt-1.log"))
    assert b"step 9 loss 0.41" in log, "the pre-upgrade run's pod was not found"
    for _ in range(3):
        for controller in both:
            controller.reconcile_once()
    assert stranger in k8s_jobs(api)


def pod_names(api: ApiClient) -> list[str]:
    return [p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items]
