"""End to end on the Kubernetes launcher: a live API server configured with a kubeconfig for kmock's
emulator launches the job as a batch/v1 Job; the test kubelet runs the pod's command here (the real
trainer on a tiny model), which reports to the real API; the adapter is downloaded and loaded."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import (
    ADMIN_KEY,
    TERMINAL,
    bearer,
    load_adapter,
    messages,
    new_project_key,
    wait_status,
)
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript, wait_for, write_kubeconfig
from tests.k8s.conftest import NAMESPACE
from tests.trainer.conftest import rule_data

__all__ = ["rule_data"]
pytestmark = pytest.mark.slow


@pytest.fixture
def live_url(cluster: EmulatorThread, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "alignd",
        admin_key=ADMIN_KEY,
        public_url=url,
        controller_interval_seconds=0.2,
        launcher="kubernetes",
        k8s_kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", cluster.url),
        k8s_namespace=NAMESPACE,
        k8s_pending_deadline_seconds=120,
    )
    with BackgroundServer(settings, "127.0.0.1", port):
        yield url
    # The server's shutdown stops the launcher's watches: nothing keeps polling a cluster it left.
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("informer-")],
        30,
        "watches to stop",
    )


@pytest.fixture
def executing_kubelet(cluster: EmulatorThread, tmp_path: Path) -> Iterator[Kubelet]:
    assert cluster.emulator is not None
    kubelet = Kubelet(
        cluster.api_client(),
        NAMESPACE,
        cluster.emulator,
        lambda job, n: PodScript("exec"),
        workdir=tmp_path / "pods",
    )
    kubelet.start()
    yield kubelet
    kubelet.stop()
    assert not kubelet.errors, kubelet.errors


def start_job(api: httpx.Client, tiny_model_dir: Path, train: Path, hyperparameters: dict[str, Any]) -> str:
    api.headers.update(bearer(new_project_key(api, "k8s")))
    api.post("/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY))
    body = b"".join(train.read_bytes().splitlines(keepends=True)[:200])
    upload = api.post("/v1/files", files={"file": ("train.jsonl", body)}, data={"purpose": "fine-tune"})
    assert upload.status_code == 200, upload.text
    created = api.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny",
            "training_file": upload.json()["id"],
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 8} | hyperparameters}},
            "alignd": {"lora": {"r": 4, "alpha": 8}, "resources": {"gpus": 0}},
        },
    )
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def test_a_job_runs_as_a_kubernetes_job_and_its_adapter_loads(
    live_url: str,
    executing_kubelet: Kubelet,
    tiny_model_dir: Path,
    rule_data: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_url, timeout=60) as api:
        hyperparameters = {"learning_rate": 2e-3, "max_steps": 4, "save_steps": 2}
        job_id = start_job(api, tiny_model_dir, rule_data[0], hyperparameters)
        job = wait_status(api, job_id, TERMINAL, timeout=300)
        assert job["status"] == "succeeded", messages(api, job_id)
        assert job["trained_tokens"] > 0
        checkpoints = api.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        assert [c["step_number"] for c in checkpoints] == [4, 2]

        model = load_adapter(api, job["id"], tiny_model_dir, tmp_path / "download")
        assert model.peft_config["default"].r == 4

    logs = tmp_path / "alignd" / "data" / "jobs" / job["id"] / "logs" / "attempt-1.log"
    assert logs.exists() and b"===== pod alignd-" in logs.read_bytes()


def test_a_preempted_pod_is_replaced_and_resumes_from_the_uploaded_checkpoint(
    live_url: str,
    executing_kubelet: Kubelet,
    tiny_model_dir: Path,
    rule_data: tuple[Path, Path],
) -> None:
    with httpx.Client(base_url=live_url, timeout=60) as api:
        job_id = start_job(api, tiny_model_dir, rule_data[0], {"max_steps": 60, "save_steps": 10})
        deadline = time.monotonic() + 120
        while not api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]:
            assert time.monotonic() < deadline, messages(api, job_id)
            time.sleep(0.2)
        first_pod = next(iter(executing_kubelet._procs))
        executing_kubelet.preempt(first_pod)

        job = wait_status(api, job_id, TERMINAL, timeout=300)
        log = messages(api, job_id)
        assert job["status"] == "succeeded", log
        assert job["alignd"]["attempt"] == 1, "preemption is absorbed by the same Kubernetes Job"
        assert any("was disrupted" in m for m in log), log
        resumed = [m for m in log if m.startswith("resumed from checkpoint at step")]
        assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 10, log
        assert len(executing_kubelet._procs) == 2, "the replacement pod ran on a fresh work directory"
