"""How long one controller pass takes with N running jobs on the Kubernetes launcher.

DESIGN.md section 12 asks for 1,000 concurrent jobs tracked by one controller. This builds N job rows
(status running) and N labelled Jobs with one running pod each in kmock's Kubernetes emulator (the
test emulator from tests/k8s, over real HTTP through the official client), starts a controller, and
times: the launcher's first list of Jobs, pods and events; then full reconcile passes (schedule, sync
every running job, cancels, orphans), which read the watch caches and so make no per-job API call.

    python bench/controller_bench.py --jobs 1000 [--database-url postgresql+psycopg://...]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kmock
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.k8s.cluster import EmulatorThread

from alignd.config import Settings
from alignd.controller import Controller
from alignd.db import make_engine, session_factory, upgrade
from alignd.jobs.lifecycle import RunKind
from alignd.launchers.k8s_manifests import ATTEMPT_LABEL, JOB_ID_LABEL, RUN_LABEL, job_name, selector
from alignd.launchers.kubernetes import KubernetesLauncher
from alignd.models import JobModel, ProjectModel, RunModel
from alignd.storage.local import LocalStore
from alignd.storage.signing import UrlSigner

NAMESPACE = "bench"
RELEASE = Settings.model_fields["k8s_release"].default
SPEC = {"model": "/models/tiny", "training_file": "file-bench", "resources": {"gpus": 1}}


def labels(job_id: str) -> dict[str, str]:
    release = dict(term.split("=") for term in selector(RELEASE).split(","))
    return release | {JOB_ID_LABEL: job_id, ATTEMPT_LABEL: "1", RUN_LABEL: job_name(job_id, 1, RELEASE)}


def populate_cluster(cluster: EmulatorThread, job_ids: list[str]) -> float:
    """Objects go straight into the emulator's store: creating thousands over HTTP would time kmock,
    not the controller."""
    assert cluster.emulator is not None
    objects = cluster.emulator.objects
    started = time.perf_counter()
    for job_id in job_ids:
        name = job_name(job_id, 1, RELEASE)
        metadata = {"name": name, "namespace": NAMESPACE, "labels": labels(job_id), "uid": name}
        template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "t"}]}}
        objects[kmock.resource("batch", "v1", "jobs"), NAMESPACE, name] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": {"template": template},
            "status": {"active": 1},
        }
        objects[kmock.resource("", "v1", "pods"), NAMESPACE, f"{name}-x"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata | {"name": f"{name}-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": template["spec"],
            "status": {"phase": "Running"},
        }
    return time.perf_counter() - started


def populate_db(sessions: Session, n: int) -> list[str]:
    project = ProjectModel(name=f"bench-{time.time_ns()}", quota_concurrent_jobs=n, quota_gpus=n)
    sessions.add(project)
    sessions.commit()
    now = int(time.time())
    jobs = [
        JobModel(
            project_id=project.id,
            model="tiny",
            training_file="file-bench",
            status="running",
            spec=SPEC,
            seed=0,
            attempt=1,
            started_at=now,
        )
        for _ in range(n)
    ]
    runs = [
        RunModel(
            kind=RunKind.train,
            job_id=job.id,
            attempt=1,
            launcher_ref=job_name(job.id, 1, RELEASE),
            last_heartbeat_at=now + 10**6,
        )
        for job in jobs
    ]
    sessions.add_all([*jobs, *runs])
    sessions.commit()
    return [job.id for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        engine = make_engine(url)
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            job_ids = populate_db(session, args.jobs)

        cluster = EmulatorThread()
        cluster.start()
        cluster.ready.wait(10)
        create_seconds = populate_cluster(cluster, job_ids)

        settings = Settings(data_dir=Path(tmp), launcher="kubernetes", k8s_namespace=NAMESPACE)
        launcher = KubernetesLauncher(settings, cluster.api_client())
        store = LocalStore(Path(tmp) / "store", signer=UrlSigner(b"k"), public_url="http://127.0.0.1:1")
        controller = Controller(sessions=sessions, launcher=launcher, store=store, settings=settings)

        started = time.perf_counter()
        launcher.start()
        sync_seconds = time.perf_counter() - started
        passes = []
        for _ in range(args.passes):
            started = time.perf_counter()
            controller.reconcile_once()
            passes.append(time.perf_counter() - started)
        with sessions() as session:
            still_running = sum(
                1 for j in job_ids if (row := session.get(JobModel, j)) and row.status == "running"
            )
        launcher.close()
        cluster.stop()

    backend = url.split(":", 1)[0]
    print("| jobs | database | first list (s) | pass median (s) | pass max (s) | still running | setup (s) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.jobs} | {backend} | {sync_seconds:.2f} | {statistics.median(passes):.3f} | "
        f"{max(passes):.3f} | {still_running} | {create_seconds:.1f} |"
    )


if __name__ == "__main__":
    main()
