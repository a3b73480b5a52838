"""Every trainer call to the control plane (and to the presigned URLs it hands out) rides out a blip:
against a real HTTP server on loopback that fails its first requests (503, 429, a dropped connection, a
body cut short), the upload-URL request, the uploads, the spec, the resume point and its downloads all
succeed; other 4xx are answered at once, and a control plane that stays down is given up on within the
policy's bounds."""

import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alignd.contract import JobSpec, ModelFile, ResumeCheckpoint, UploadUrlsResponse
from alignd_trainer.artifacts import HttpUploadSink
from alignd_trainer.errors import BadInputError, InfrastructureError
from alignd_trainer.managed import ManagedJob
from alignd_trainer.remote import fetch_spec, localize_checkpoint
from alignd_trainer.retry import RetryPolicy

JOB_ID = "ftjob-retry"
TOKEN = "tok-retry-secret"
FAST = RetryPolicy(max_retries=5, give_up_after=10.0, backoff_base=0.01, backoff_max=0.05)
CHECKPOINT = {"model.safetensors": b"w" * 5000, "state/trainer.json": b'{"step": 7}'}


@dataclass
class Fault:
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Hang up without an answer."""
    cut: bool = False
    """Answer 200 with a Content-Length, then hang up halfway through the body."""


class ControlPlane:
    """The trainer's side of the control plane and the store, in memory: spec, resume point, upload URLs,
    blobs. Faults queued with `fail(route, ...)` answer the next requests whose path holds `route`."""

    def __init__(self) -> None:
        self.faults: dict[str, deque[Fault]] = {}
        self.seen: list[tuple[str, str, int | None]] = []
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.01,), daemon=True)

    def fail(self, route: str, *faults: Fault) -> None:
        self.faults.setdefault(route, deque()).extend(faults)

    def next_fault(self, path: str) -> Fault | None:
        queue = next((queue for route, queue in self.faults.items() if route in path and queue), None)
        return queue.popleft() if queue else None

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        internal = f"/internal/v1/jobs/{JOB_ID}/"
        if method == "PUT" and path.startswith("/blob/"):
            self.blobs[path.removeprefix("/blob/")] = body
            return 200, b""
        if method == "GET" and path.startswith("/blob/"):
            return 200, self.blobs[path.removeprefix("/blob/")]
        if method == "GET" and path == internal + "spec":
            return 200, JobSpec(model="m", training_file="t.jsonl").model_dump_json().encode()
        if method == "GET" and path == internal + "resume":
            files = [
                ModelFile(path=name, url=f"{self.url}/blob/ckpt/{name}", size=len(data))
                for name, data in CHECKPOINT.items()
            ]
            return 200, ResumeCheckpoint(step=7, files=files).model_dump_json().encode()
        if method == "POST" and path == internal + "upload_urls":
            request = json.loads(body)
            prefix = f"jobs/{JOB_ID}/{request['artifact']}"
            urls = {name: f"{self.url}/blob/{prefix}/{name}" for name in request["files"]}
            return 200, UploadUrlsResponse(urls=urls, prefix=prefix).model_dump_json().encode()
        return 404, b'{"error": {"message": "no such route"}}'

    def statuses(self, method: str, route: str) -> list[int | None]:
        return [status for m, path, status in self.seen if m == method and route in path]


def _handler(plane: ControlPlane) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with plane.lock:
                fault = plane.next_fault(self.path)
                status, content = plane.answer(self.command, self.path, body)
                if fault is not None and not fault.cut:
                    status, content = fault.status, b'{"error": {"message": "scripted fault"}}'
                plane.seen.append((self.command, self.path, None if fault and fault.drop else status))
            if fault is not None and fault.drop:
                self.close_connection = True
                return
            self.send_response(status)
            for name, value in (fault.headers if fault else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content[: len(content) // 2] if fault and fault.cut else content)
            if fault is not None and fault.cut:
                self.close_connection = True

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    server = ControlPlane()
    server.thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def _checkpoint_dir(root: Path) -> Path:
    for name, data in CHECKPOINT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_checkpoint_upload_rides_out_control_plane_and_store_blips(
    plane: ControlPlane, tmp_path: Path
) -> None:
    plane.fail("upload_urls", Fault(503), Fault(drop=True), Fault(502))
    plane.fail("/blob/", Fault(500), Fault(drop=True))
    sink = HttpUploadSink(plane.url, JOB_ID, TOKEN, policy=FAST)

    prefix = sink.publish(_checkpoint_dir(tmp_path), "checkpoints/step-00000007")

    assert prefix == f"jobs/{JOB_ID}/checkpoints/step-00000007"
    assert plane.statuses("POST", "upload_urls") == [503, None, 502, 200]
    assert plane.statuses("PUT", "/blob/") == [500, None, 200, 200]
    assert {key.removeprefix(prefix + "/"): data for key, data in plane.blobs.items()} == CHECKPOINT


def test_retry_after_is_honoured_instead_of_the_backoff(plane: ControlPlane, tmp_path: Path) -> None:
    """The policy's own first wait (15 s or more) is past its 5 s budget, so only the server's
    `Retry-After: 0` lets the second attempt happen."""
    patient = RetryPolicy(max_retries=5, give_up_after=5.0, backoff_base=30.0, backoff_max=30.0)
    plane.fail("upload_urls", Fault(429, {"Retry-After": "0"}), Fault(503, {"Retry-After": "0"}))
    sink = HttpUploadSink(plane.url, JOB_ID, TOKEN, policy=patient)

    sink.publish(_checkpoint_dir(tmp_path), "adapter")

    assert plane.statuses("POST", "upload_urls") == [429, 503, 200]
    plane.fail("upload_urls", Fault(503))
    with pytest.raises(InfrastructureError, match="gave up after 1 attempts"):
        sink.publish(tmp_path, "adapter")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_client_errors_are_never_retried(plane: ControlPlane, tmp_path: Path, status: int) -> None:
    plane.fail("upload_urls", Fault(status))
    with pytest.raises(InfrastructureError, match=f"HTTP {status}"):
        HttpUploadSink(plane.url, JOB_ID, TOKEN, policy=FAST).publish(_checkpoint_dir(tmp_path), "adapter")
    plane.fail("spec", Fault(status))
    with pytest.raises(BadInputError, match=str(status)):
        fetch_spec(plane.url, JOB_ID, TOKEN, policy=FAST)
    assert [s for _, _, s in plane.seen] == [status, status]


def test_a_control_plane_that_stays_down_is_given_up_on_within_the_policy(
    plane: ControlPlane, closed_port: int, tmp_path: Path
) -> None:
    plane.fail("spec", *[Fault(503)] * 10)
    with pytest.raises(InfrastructureError, match="gave up after 3 attempts") as raised:
        fetch_spec(plane.url, JOB_ID, TOKEN, policy=RetryPolicy(2, 10.0, 0.01, 0.05))
    assert "HTTP 503" in str(raised.value) and TOKEN not in str(raised.value)

    unreachable = RetryPolicy(max_retries=1000, give_up_after=0.3, backoff_base=0.01, backoff_max=0.05)
    sink = HttpUploadSink(f"http://127.0.0.1:{closed_port}", JOB_ID, TOKEN, policy=unreachable)
    with pytest.raises(InfrastructureError, match="gave up") as raised:
        sink.publish(_checkpoint_dir(tmp_path), "adapter")
    assert "ConnectError" in str(raised.value) and TOKEN not in str(raised.value)


def test_spec_and_resume_downloads_ride_out_blips(plane: ControlPlane, tmp_path: Path) -> None:
    plane.fail("spec", Fault(502), Fault(drop=True))
    assert fetch_spec(plane.url, JOB_ID, TOKEN, policy=FAST).model == "m"

    for name, data in CHECKPOINT.items():
        plane.blobs[f"ckpt/{name}"] = data
    plane.fail("resume", Fault(503))
    plane.fail("model.safetensors", Fault(cut=True), Fault(429, {"Retry-After": "0"}))
    plane.fail("trainer.json", Fault(drop=True))
    spec = JobSpec(model="m", training_file="t.jsonl", output_dir=str(tmp_path / "out"))

    step = localize_checkpoint(spec, ManagedJob(JOB_ID, plane.url, TOKEN), policy=FAST)

    assert step == 7
    restored = tmp_path / "out" / "checkpoints" / "step-00000007"
    assert {name: (restored / name).read_bytes() for name in CHECKPOINT} == CHECKPOINT
    assert plane.statuses("GET", "resume") == [503, 200]
    assert plane.statuses("GET", "model.safetensors") == [200, 429, 200], "the cut body was fetched again"
    assert plane.statuses("GET", "trainer.json") == [None, 200]
