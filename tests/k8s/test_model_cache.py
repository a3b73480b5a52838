"""The shared model cache (ALIGND_K8S_MODEL_CACHE_CLAIM, trainer.modelCache.existingClaim), end to end:
a live API server on kmock with the S3 store (moto, behind a proxy that counts requests), and the test
kubelet running the real trainer with the claim as one directory shared by every pod. The first run
downloads the base model through presigned URLs; the second run, on the same model, downloads nothing."""

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import urllib3

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, TERMINAL, bearer, messages, new_project_key, wait_status
from tests.k8s.cluster import EmulatorThread, Kubelet, PodScript, write_kubeconfig
from tests.k8s.conftest import NAMESPACE
from tests.storage.conftest import REGION, s3_endpoint, s3_store
from tests.trainer.conftest import rule_data

__all__ = ["rule_data", "s3_endpoint"]
pytestmark = pytest.mark.slow
CLAIM = "hf-model-cache"
HOP_BY_HOP = {"connection", "transfer-encoding", "keep-alive", "content-length"}


class CountingProxy(ThreadingHTTPServer):
    """Forwards every request to the S3 endpoint and records (method, path): presigned URLs are signed
    for this address, so the trainers' downloads pass here too."""

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.target = target
        self.pool = urllib3.PoolManager()
        self.requests: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_port}"

    def gets_under(self, prefix: str) -> int:
        return sum(method == "GET" and path.startswith(prefix) for method, path in self.requests)


class _Forward(BaseHTTPRequestHandler):
    server: CountingProxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        self.server.requests.append((self.command, self.path.split("?", 1)[0]))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        answer = self.server.pool.request(
            self.command,
            f"http://{self.server.target}{self.path}",
            body=body,
            headers=headers,
            redirect=False,
        )
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[CountingProxy]:
    server = CountingProxy(s3_endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def live_url(cluster: EmulatorThread, proxy: CountingProxy, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "alignd",
        admin_key=ADMIN_KEY,
        public_url=url,
        controller_interval_seconds=0.2,
        store="s3",
        s3_endpoint=proxy.endpoint,
        s3_bucket=f"alignd-{secrets.token_hex(6)}",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_region=REGION,
        s3_secure=False,
        launcher="kubernetes",
        k8s_kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", cluster.url),
        k8s_namespace=NAMESPACE,
        k8s_pending_deadline_seconds=120,
        k8s_model_cache_claim=CLAIM,
    )
    with BackgroundServer(settings, "127.0.0.1", port):
        yield url


@pytest.fixture
def executing_kubelet(cluster: EmulatorThread, tmp_path: Path) -> Iterator[Kubelet]:
    assert cluster.emulator is not None
    kubelet = Kubelet(
        cluster.api_client(), NAMESPACE, cluster.emulator, lambda job, n: PodScript("exec"), workdir=tmp_path
    )
    kubelet.start()
    yield kubelet
    kubelet.stop()
    assert not kubelet.errors, kubelet.errors


def train(api: httpx.Client, file_id: str) -> str:
    created = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny-s3", "training_file": file_id,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 8, "max_steps": 2}}},
        "alignd": {"lora": {"r": 4, "alpha": 8}, "resources": {"gpus": 0}},
    })  # fmt: skip
    assert created.status_code == 200, created.text
    job_id = str(created.json()["id"])
    job = wait_status(api, job_id, TERMINAL, timeout=300)
    assert job["status"] == "succeeded", messages(api, job_id)
    return job_id


def test_the_second_run_on_a_cached_model_downloads_nothing(
    live_url: str,
    executing_kubelet: Kubelet,
    proxy: CountingProxy,
    s3_endpoint: str,
    tiny_model_dir: Path,
    rule_data: tuple[Path, Path],
) -> None:
    models = s3_store(s3_endpoint)
    files = sorted(p for p in tiny_model_dir.rglob("*") if p.is_file())
    for path in files:
        models.put_bytes(f"models/tiny/{path.relative_to(tiny_model_dir).as_posix()}", path.read_bytes())
    model_objects = f"/{models.bucket}/models/tiny/"
    with httpx.Client(base_url=live_url, timeout=60) as api:
        api.headers.update(bearer(new_project_key(api, "cache")))
        source = f"s3://{models.bucket}/models/tiny"
        registered = api.post(
            "/v1/models", json={"id": "tiny-s3", "source": source}, headers=bearer(ADMIN_KEY)
        )
        assert registered.status_code == 200, registered.text
        rows = b"".join(rule_data[0].read_bytes().splitlines(keepends=True)[:64])
        upload = api.post("/v1/files", files={"file": ("train.jsonl", rows)}, data={"purpose": "fine-tune"})
        assert upload.status_code == 200, upload.text

        first = train(api, upload.json()["id"])
        assert proxy.gets_under(model_objects) == len(files), "the first run downloads each file once"
        [cached] = (executing_kubelet.claim_dir(CLAIM) / "alignd" / "models").iterdir()
        assert any(
            m.startswith(f"loading {executing_kubelet.claim_dir(CLAIM)}") for m in messages(api, first)
        )

        second = train(api, upload.json()["id"])
        assert proxy.gets_under(model_objects) == len(files), "the second run downloads nothing"
        assert any(m.startswith(f"loading {cached}") for m in messages(api, second))
    assert len(executing_kubelet._procs) == 2, "two pods, each with its own work directory"
