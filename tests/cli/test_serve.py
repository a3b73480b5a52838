"""`alignd serve`: any port works without further configuration; `--workers N` runs several processes on
one port, started on an empty database, with one Prometheus view of the requests all of them served."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from alignd.server import advertised_url, free_port, start_serve
from tests.api.helpers import ADMIN_KEY as API_ADMIN_KEY
from tests.api.helpers import bearer, new_project_key
from tests.trainer.conftest import rule_data

__all__ = ["rule_data"]

pytestmark = pytest.mark.slow
ADMIN_KEY = "sk-alignd-admin-serve-test"


def _requests_counted(metrics: str, route: str) -> float:
    pattern = rf'^alignd_http_requests_total\{{method="GET",route="{re.escape(route)}",status="200"\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, flags=re.MULTILINE))


def test_two_workers_share_the_port_the_database_and_the_metrics(tmp_path: Path) -> None:
    port = free_port()
    # The data directory is empty: the database is created before the workers start.
    server = start_serve(tmp_path, admin_key=ADMIN_KEY, port=port, workers=2, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        project = httpx.post(f"{url}/v1/admin/projects", json={"name": "w"}, headers=admin)
        assert project.status_code == 200, project.text
        key = httpx.post(
            f"{url}/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=admin
        ).json()["value"]
        # New connections, so the kernel spreads them over both workers.
        for _ in range(40):
            assert httpx.get(f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200

        # Whichever worker answers a scrape (new connections again), it reports the sum over both.
        counts = [_requests_counted(httpx.get(f"{url}/metrics").text, "/v1/files") for _ in range(10)]

        assert counts == [40] * 10
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    assert server.returncode == 0


def test_a_job_succeeds_on_any_port_with_no_public_url_set(
    tmp_path: Path, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    """The trainer reports to the address the server bound; it used to be told port 8000 whatever the
    server listened on, and every job failed with "cannot reach the control plane"."""
    port = free_port()
    server = start_serve(
        tmp_path, admin_key=API_ADMIN_KEY, port=port, controller=True, stderr=subprocess.PIPE
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
            api.headers.update(bearer(new_project_key(api, "any-port")))
            model = {"id": "tiny", "source": str(tiny_model_dir)}
            registered = api.post("/v1/models", json=model, headers=bearer(API_ADMIN_KEY))
            assert registered.status_code == 200, registered.text
            body = b"".join(rule_data[0].read_bytes().splitlines(keepends=True)[:64])
            upload = api.post("/v1/files", files={"file": ("t.jsonl", body)}, data={"purpose": "fine-tune"})
            assert upload.status_code == 200, upload.text
            created = api.post("/v1/fine_tuning/jobs", json={
                "model": "tiny", "training_file": upload.json()["id"],
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 8, "max_steps": 2}}},
                "alignd": {"resources": {"gpus": 0}},
            })  # fmt: skip
            assert created.status_code == 200, created.text
            job = _finished(api, created.json()["id"])
            events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()
            assert job["status"] == "succeeded", events
            assert job["trained_tokens"] > 0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def _finished(api: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout:.0f} s"
        time.sleep(0.2)


def test_the_kubernetes_launcher_refuses_to_start_without_a_public_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ALIGND_PUBLIC_URL"} | {
        "ALIGND_DATA_DIR": str(tmp_path),
        "ALIGND_LAUNCHER": "kubernetes",
    }
    command = [sys.executable, "-m", "alignd.cli", "serve", "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "ALIGND_PUBLIC_URL" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000"),
        ("0.0.0.0", "http://127.0.0.1:9000"),
        ("::", "http://[::1]:9000"),
        ("::1", "http://[::1]:9000"),
        ("alignd.internal", "http://alignd.internal:9000"),
    ],
)
def test_the_advertised_url_reaches_the_bound_address_from_this_machine(host: str, url: str) -> None:
    assert advertised_url(host, 9000) == url
