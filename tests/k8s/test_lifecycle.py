"""The controller with the Kubernetes launcher against kmock's API emulator (real HTTP, the official
client) and a test kubelet that plays the Job controller: each test is one thing a cluster does to a
run, and what the user sees on the job afterwards."""

import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client import ApiClient
from sqlmodel import Session, select

from alignd.controller import Controller
from alignd.jobs.service import cancel_job, pause_job, resume_job
from alignd.launchers.k8s_manifests import job_name, selector
from alignd.launchers.kubernetes import KubernetesLauncher
from alignd.models import JobModel, ProjectModel
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript, summary_json, wait_for
from tests.k8s.conftest import NAMESPACE, RELEASE, Scripts
from tests.k8s.helpers import drive, events, k8s_jobs, pods_of, queued


def test_a_run_that_succeeds_keeps_its_logs_and_never_puts_the_token_in_the_pod(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    scripts[run] = [PodScript("succeed", logs="step 1 loss 0.69\n")]
    controller = make_controller()
    done = drive(controller, session, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded", events(session, job.id)
    assert done.fine_tuned_model and done.fine_tuned_model.endswith(job.id)
    assert b"step 1 loss 0.69" in b"".join(controller.store.iter_bytes(f"jobs/{job.id}/logs/attempt-1.log"))

    created = k8s_jobs(api)[run]
    pod = created.spec.template.spec
    assert pod.node_selector == {"gpu": "h100"} and pod.containers[0].resources.limits == {
        "nvidia.com/gpu": "1"
    }
    token_env = [e for e in pod.containers[0].env if e.name == "ALIGND_JOB_TOKEN"]
    assert token_env[0].value is None and token_env[0].value_from.secret_key_ref.name == f"{run}-token"
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{run}-token", NAMESPACE)
    assert secret.metadata.owner_references[0].uid == created.metadata.uid


def test_a_not_retriable_exit_fails_at_once_with_the_trainers_message(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    message = "training_file line 3: field 'chosen' is missing"
    scripts[run] = [
        PodScript("fail", exit_code=65, termination_message=summary_json(65, "BadInput", message))
    ]
    failed = drive(make_controller(), session, job.id, {"succeeded", "failed"})
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["message"] == message and failed.error["code"] == "badinput"
    assert failed.attempt == 1 and len(pods_of(api, run)) == 1, "exit 65 must not be retried"


def test_preemption_resumes_in_a_new_pod_of_the_same_run(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    scripts[run] = [PodScript("preempt", exit_code=143), PodScript("hold")]
    controller = make_controller()
    drive(controller, session, job.id, {"running"})
    wait_for(lambda: len(pods_of(api, run)) == 2, 10, "a replacement pod")
    deadline = time.monotonic() + 10
    while not any("was disrupted" in e for e in events(session, job.id)):
        controller.reconcile_once()
        assert time.monotonic() < deadline, events(session, job.id)
    scripts[run][1] = PodScript("succeed")
    done = drive(controller, session, job.id, {"succeeded", "failed"})
    assert done.status == "succeeded" and done.attempt == 1 and done.retries == 0
    assert sum("was disrupted" in e for e in events(session, job.id)) == 1, "one event per disruption"


def test_an_oom_kill_becomes_a_clear_error(
    make_controller: Callable[[], Controller], session: Session, scripts: Scripts, kubelet: Kubelet
) -> None:
    job = queued(session)
    scripts[job_name(job.id, 1, RELEASE)] = [PodScript("oom")]
    failed = drive(make_controller(), session, job.id, {"succeeded", "failed"})
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "oomkilled" and "batch_size" in failed.error["message"]


def test_an_unschedulable_run_shows_why_and_fails_at_the_pending_deadline(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    scripts[run] = [PodScript("unschedulable")]
    controller = make_controller()
    drive(controller, session, job.id, {"running"})
    wait_for(
        lambda: (
            controller.reconcile_once(),
            any("Insufficient nvidia.com/gpu" in e for e in events(session, job.id)),
        )[1],
        10,
        "the scheduling reason as a job event",
    )
    failed = drive(controller, session, job.id, {"failed"})
    assert failed.error is not None and failed.error["code"] == "unschedulable"
    assert "Insufficient nvidia.com/gpu" in failed.error["message"]
    waits = [e for e in events(session, job.id) if e.startswith("Waiting for a node")]
    assert len(waits) == 1, f"one event for a reason seen on every pass: {waits}"
    wait_for(lambda: run not in k8s_jobs(api), 10, "the stuck Job to be deleted")


def test_an_image_that_cannot_be_pulled_fails_the_job(
    make_controller: Callable[[], Controller], session: Session, scripts: Scripts, kubelet: Kubelet
) -> None:
    job = queued(session)
    scripts[job_name(job.id, 1, RELEASE)] = [PodScript("imagepull")]
    failed = drive(make_controller(), session, job.id, {"failed"})
    assert failed.error is not None and failed.error["code"] == "imagepullbackoff"
    assert "ALIGND_K8S_TRAINER_IMAGE" in failed.error["message"]


def test_cancel_deletes_the_job_and_its_pods(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    job = queued(session)
    run = job_name(job.id, 1, RELEASE)
    controller = make_controller()
    drive(controller, session, job.id, {"running"})
    wait_for(lambda: len(pods_of(api, run)) == 1, 10, "the trainer pod")
    project = session.get(ProjectModel, job.project_id)
    assert project is not None
    cancel_job(session, project, job.id)
    controller.reconcile_once()
    wait_for(lambda: run not in k8s_jobs(api) and not pods_of(api, run), 10, "the Job and its pods to go")
    session.expire_all()
    cancelled = session.get(JobModel, job.id)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.desired is None


def test_pause_deletes_the_run_and_resume_starts_the_next_attempt(
    make_controller: Callable[[], Controller], session: Session, kubelet: Kubelet, api: ApiClient
) -> None:
    job = queued(session)
    controller = make_controller()
    drive(controller, session, job.id, {"running"})
    project = session.get(ProjectModel, job.project_id)
    assert project is not None
    pause_job(session, project, job.id)
    drive(controller, session, job.id, {"paused"})
    assert job_name(job.id, 1, RELEASE) not in k8s_jobs(api)
    resume_job(session, project, job.id)
    resumed = drive(controller, session, job.id, {"running"})
    assert resumed.attempt == 2 and job_name(job.id, 2, RELEASE) in k8s_jobs(api)


def test_a_server_restart_picks_up_running_jobs_and_relaunches_lost_ones(
    make_controller: Callable[[], Controller],
    session: Session,
    scripts: Scripts,
    kubelet: Kubelet,
    api: ApiClient,
) -> None:
    alive, lost = queued(session), queued(session)
    first = make_controller()
    drive(first, session, alive.id, {"running"})
    drive(first, session, lost.id, {"running"})
    first.launcher.close()  # type: ignore[attr-defined]
    client.BatchV1Api(api).delete_namespaced_job(job_name(lost.id, 1, RELEASE), NAMESPACE)

    second = make_controller()
    second.reconcile_once()
    session.expire_all()
    still = session.get(JobModel, alive.id)
    assert still is not None and still.status == "running" and still.attempt == 1
    relaunched = drive(second, session, lost.id, {"running"}, timeout=10)
    assert relaunched.attempt == 2 and relaunched.retries == 1
    assert any("retrying" in e for e in events(session, lost.id))
    scripts[job_name(alive.id, 1, RELEASE)] = [PodScript("succeed")]
    done = drive(second, session, alive.id, {"succeeded", "failed"})
    assert done.status == "succeeded", done.error


def test_a_labelled_job_with_no_live_row_is_deleted(
    make_controller: Callable[[], Controller], session: Session, kubelet: Kubelet, api: ApiClient
) -> None:
    job = queued(session)
    controller = make_controller()
    drive(controller, session, job.id, {"running"})
    session.exec(select(JobModel).where(JobModel.id == job.id)).one()
    finished = session.get(JobModel, job.id)
    assert finished is not None
    finished.status = "succeeded"  # the row moved on without the run (e.g. restored from a backup)
    session.add(finished)
    session.commit()
    controller.reconcile_once()
    wait_for(lambda: job_name(job.id, 1, RELEASE) not in k8s_jobs(api), 10, "the orphaned Job to be deleted")


def test_an_expired_watch_lists_again_and_keeps_tracking(
    cluster: EmulatorThread, make_launcher: Callable[[], KubernetesLauncher], session: Session, api: ApiClient
) -> None:
    assert cluster.emulator is not None
    cluster.emulator.expire_next_watches = 3
    cluster.emulator.expiring = ("jobs", selector(RELEASE))
    launcher = make_launcher()
    launcher.start()
    wait_for(lambda: cluster.emulator is not None and cluster.emulator.watches_expired == 3, 10, "three 410s")
    wait_for(lambda: launcher.jobs.relists >= 2, 10, "a second list after the 410")
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "alignd-made-elsewhere-1",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/managed-by": "alignd",
                "app.kubernetes.io/component": "trainer",
                "alignd.dev/job-id": "ftjob-elsewhere",
                "alignd.dev/release": RELEASE,
            },
        },
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "i"}]}}
        },
    }
    client.BatchV1Api(api).create_namespaced_job(NAMESPACE, body)
    wait_for(lambda: "ftjob-elsewhere" in launcher.active_job_ids(), 10, "the watch to see a new Job")
