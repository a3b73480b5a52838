"""What the API tests (and the CLI, SDK, webhook, fault and Kubernetes tests that drive the same API) do
over and over: the admin key, a project key, a registered model, an uploaded file, a downloaded adapter.
Plain functions over any httpx.Client (TestClient is one), imported by tests; the fixtures built on them
live in tests/api/conftest.py."""

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
from peft import PeftModel
from transformers import AutoModelForCausalLM

from alignd.jobs.lifecycle import JobStatus

ADMIN_KEY = "sk-alignd-admin-test-key"
ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}
"""A valid preference row."""
TERMINAL = {status.value for status in JobStatus if status.is_terminal}
"""The statuses a job ends in, the same on the wire and in `alignd.status`."""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_project_key(client: httpx.Client, name: str, **quotas: int) -> str:
    """A new project (with `quotas`, e.g. quota_gpus=4) and its API key, made with the admin key."""
    project = client.post("/v1/admin/projects", json={"name": name, **quotas}, headers=bearer(ADMIN_KEY))
    assert project.status_code == 200, project.text
    key = client.post(
        f"/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=bearer(ADMIN_KEY)
    )
    assert key.status_code == 200, key.text
    value: str = key.json()["value"]
    return value


def register_model(client: httpx.Client, tmp_path: Path) -> str:
    """Register a base model "tiny" (a directory with an empty config) with the admin key."""
    model_dir = tmp_path / "base-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    response = client.post(
        "/v1/models", json={"id": "tiny", "source": str(model_dir)}, headers=bearer(ADMIN_KEY)
    )
    assert response.status_code == 200, response.text
    return "tiny"


def upload_rows(client: httpx.Client, key: str) -> str:
    """Upload a small valid preference file for the project of `key`; returns its file id."""
    body = "".join(json.dumps(ROW) + "\n" for _ in range(20)).encode()
    response = client.post(
        "/v1/files", files={"file": ("t.jsonl", body)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def load_adapter(api: httpx.Client, job_id: str, base_model: Path, directory: Path) -> PeftModel:
    """Download a job's adapter archive through the API and load it onto its base model with peft."""
    archive = api.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts/adapter")
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(directory, filter="data")
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), directory / "adapter")


def upload_lines(api: httpx.Client, path: Path, rows: int) -> str:
    """Upload the first `rows` lines of a JSONL file for fine-tuning; returns its file id."""
    body = b"".join(path.read_bytes().splitlines(keepends=True)[:rows])
    response = api.post("/v1/files", files={"file": (path.name, body)}, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def wait_status(api: httpx.Client, job_id: str, until: set[str], timeout: float = 240) -> dict[str, Any]:
    """Poll the job until its alignd status (`alignd.status`, which tells `paused` from `queued`) is one
    of `until`; return it. Fails at the deadline with the status and the job's latest events."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["alignd"]["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['alignd']['status']}: {messages(api, job_id)}"
        time.sleep(0.2)


def messages(api: httpx.Client, job_id: str) -> list[str]:
    """The job's latest 100 event messages, newest first."""
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    return [e["message"] for e in events]


def proc_state(pid: int) -> str:
    """The process's /proc status, lowercased; "zombie" once it is gone."""
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
