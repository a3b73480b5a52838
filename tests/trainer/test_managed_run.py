"""A managed run: the trainer gets only ALIGND_JOB_ID / ALIGND_API_URL / ALIGND_JOB_TOKEN, fetches
its spec and data over HTTP and reports back. The control plane's internal API is played by a
loopback server that parses every payload with the shared contract models."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alignd.contract import JobSpec, ReportBatch, ResumeCheckpoint, UploadUrlsRequest, UploadUrlsResponse
from tests.trainer.harness import run_trainer, trainer_env

pytestmark = pytest.mark.slow
TOKEN = "job-token-123"


class InternalApi(ThreadingHTTPServer):
    spec: dict[str, Any]
    data: bytes
    batches: list[ReportBatch]
    uploads: dict[str, bytes]


class Handler(BaseHTTPRequestHandler):
    server: InternalApi

    def log_message(self, *args: Any) -> None:
        pass

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return False
        return True

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/data/train.jsonl":
            self._send(self.server.data)
        elif self.path == "/internal/v1/jobs/job-1/spec" and self._authorized():
            self._send(json.dumps(self.server.spec).encode())
        elif self.path == "/internal/v1/jobs/job-1/resume" and self._authorized():
            self._send(ResumeCheckpoint().model_dump_json().encode())  # a first run: nothing to resume

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/internal/v1/jobs/job-1/report" and self._authorized():
            self.server.batches.append(ReportBatch.model_validate_json(body))
            self._send(b"{}")
        elif self.path == "/internal/v1/jobs/job-1/upload_urls" and self._authorized():
            request = UploadUrlsRequest.model_validate_json(body)
            prefix = f"jobs/job-1/{request.artifact}"
            base = f"http://127.0.0.1:{self.server.server_port}/upload/{prefix}"
            plan = UploadUrlsResponse(urls={f: f"{base}/{f}" for f in request.files}, prefix=prefix)
            self._send(plan.model_dump_json().encode())

    def do_PUT(self) -> None:
        """A presigned URL: no bearer token, the URL itself is the permission."""
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.uploads[self.path.removeprefix("/upload/")] = body
        self._send(b"")


@pytest.fixture
def api(small_spec: dict[str, Any], rule_data: tuple[Path, Path]) -> Iterator[InternalApi]:
    server = InternalApi(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_port}"
    server.spec = small_spec | {"job_id": "job-1", "training_file": f"{url}/data/train.jsonl"}
    server.data = rule_data[0].read_bytes()
    server.batches = []
    server.uploads = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_managed_run_fetches_spec_and_data_and_reports_everything(api: InternalApi, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{api.server_port}"
    env = trainer_env(
        ALIGND_JOB_ID="job-1",
        ALIGND_API_URL=url,
        ALIGND_JOB_TOKEN=TOKEN,
        ALIGND_TERMINATION_LOG=str(tmp_path / "termination-log"),
    )
    run = run_trainer([], env=env)
    assert run.returncode == 0, run.stderr
    JobSpec.model_validate(api.spec)
    metrics = [m for b in api.batches for m in b.metrics]
    assert [m.step for m in metrics] == list(range(1, 13)), "every step reported once, in order"
    checkpoints = [c for b in api.batches for c in b.checkpoints]
    assert [c.step for c in checkpoints] == [4, 8, 12]
    assert checkpoints[0].path == "jobs/job-1/checkpoints/step-00000004"
    assert "jobs/job-1/checkpoints/step-00000004/optimizer.pt" in api.uploads
    assert api.uploads["jobs/job-1/adapter/adapter_model.safetensors"][:8], "the final adapter was uploaded"
    assert "jobs/job-1/adapter/adapter_config.json" in api.uploads
    assert any(e.type == "done" for b in api.batches for e in b.events)
    assert json.loads((tmp_path / "termination-log").read_text())["exit_code"] == 0
    assert TOKEN not in run.stderr


def test_a_wrong_job_token_is_refused_without_training(api: InternalApi) -> None:
    url = f"http://127.0.0.1:{api.server_port}"
    run = run_trainer(
        [], env=trainer_env(ALIGND_JOB_ID="job-1", ALIGND_API_URL=url, ALIGND_JOB_TOKEN="wrong")
    )
    assert run.returncode == 65
    assert "refused the job spec request (401)" in run.stderr
    assert not api.batches or not any(b.metrics for b in api.batches)
