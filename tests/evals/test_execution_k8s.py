"""An eval run through the Kubernetes launcher, end to end: the live server creates a batch/v1 Job in
kmock's emulator running `python -m alignd_trainer.evaluate`; the test kubelet runs that command here,
and it reports to the real API. Its `score_model` grader is judged by a registered model (SmolLM2)
through the server's own /v1/chat/completions."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.evals.live import TERMINAL, Live, judged_server, until
from tests.evals.scenarios import ITEM_SCHEMA, completions, judged_criterion, questions
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript, wait_for, write_kubeconfig
from tests.k8s.conftest import NAMESPACE, cluster

__all__ = ["cluster"]

pytestmark = pytest.mark.slow


@pytest.fixture
def live(cluster: EmulatorThread, tmp_path: Path, tiny_model_dir: Path, smollm2_dir: Path) -> Iterator[Live]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        with judged_server(
            tmp_path / "alignd",
            {"tiny": tiny_model_dir, "smollm2": smollm2_dir},
            launcher="kubernetes",
            k8s_kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", cluster.url),
            k8s_namespace=NAMESPACE,
            # Here the launcher reported the run pending (no pod seen) until its Job completed, although
            # the emulator listed the pod Running; the deadline outlasts a whole run on a busy machine.
            k8s_pending_deadline_seconds=900,
            eval_gpus=0,
        ) as server:
            yield server
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


def test_score_model_runs_as_a_kubernetes_job(
    live: Live, executing_kubelet: Kubelet, cluster: EmulatorThread
) -> None:
    client = live.client()
    evaluation = client.evals.create(
        name="judged on the cluster",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=[judged_criterion()],
    )
    run = client.evals.runs.create(evaluation.id, data_source=completions("tiny", questions(3), 6))
    final = until(
        lambda: (r := client.evals.runs.retrieve(run.id, eval_id=evaluation.id)).status in TERMINAL and r,
        "the run ends",
    )
    assert final.status == "completed", (final.error, executing_kubelet.errors)
    assert final.result_counts.total == 3

    jobs = k8s.BatchV1Api(cluster.api_client()).list_namespaced_job(NAMESPACE).items
    [job] = [j for j in jobs if j.metadata.name.endswith(f"{run.id.replace('_', '-')}-1")]
    assert job.spec.template.spec.containers[0].command == ["python", "-m", "alignd_trainer.evaluate"]
    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
    assert all((item.results[0].sample or {}).get("model") == "smollm2" for item in items)
