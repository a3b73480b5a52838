"""End to end on the embedded defaults: a live API server (uvicorn on loopback), its controller,
the local launcher and the real trainer on a tiny model. Upload -> job -> events and metrics ->
checkpoints -> adapter downloaded and loaded with peft."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.conftest import ADMIN_KEY, bearer, load_adapter, new_project_key

pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "alignd"


@pytest.fixture
def live_url(data_dir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=data_dir, admin_key=ADMIN_KEY, public_url=url, controller_interval_seconds=0.2
    )
    with BackgroundServer(settings, "127.0.0.1", port):
        yield url


@pytest.fixture
def api(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=60) as client:
        client.headers.update(bearer(new_project_key(client, "e2e")))
        yield client


def _upload(api: httpx.Client, path: Path, rows: int) -> str:
    body = b"".join(path.read_bytes().splitlines(keepends=True)[:rows])
    response = api.post("/v1/files", files={"file": (path.name, body)}, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _wait(api: httpx.Client, job_id: str, until: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["alignd"]["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job stuck in {job['alignd']['status']}"
        time.sleep(0.2)


def test_upload_train_watch_download(
    api: httpx.Client, tiny_model_dir: Path, rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    registered = api.post(
        "/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY)
    )
    assert registered.status_code == 200, registered.text
    train, heldout = _upload(api, rule_data[0], 400), _upload(api, rule_data[1], 64)
    created = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": train, "validation_file": heldout, "suffix": "demo",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.5, "batch_size": 8, "learning_rate": 2e-3,
            "max_steps": 12, "save_steps": 4, "eval_steps": 6,
        }}},
        "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}},
    })  # fmt: skip
    assert created.status_code == 200, created.text
    job = _wait(api, created.json()["id"], TERMINAL)
    assert job["status"] == "succeeded", json.dumps(
        api.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()
    )
    assert job["fine_tuned_model"].endswith(job["id"]) and job["trained_tokens"] > 0

    metrics = api.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()
    assert [p["step"] for p in metrics["train"]] == list(range(1, 13))
    assert [p["step"] for p in metrics["eval"]] == [6, 12]
    events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert any(e["type"] == "metrics" for e in events)
    assert events[0]["message"] == "The job has successfully completed"
    checkpoints = api.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in checkpoints] == [12, 8, 4]

    model = load_adapter(api, job["id"], tiny_model_dir, tmp_path / "download")
    assert model.peft_config["default"].r == 8
    step4 = api.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/checkpoint/4")
    assert step4.status_code == 200 and len(step4.content) > 0
    assert any(m["id"] == job["fine_tuned_model"] for m in api.get("/v1/models").json()["data"])


def test_cancel_stops_the_run(
    api: httpx.Client, data_dir: Path, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    api.post("/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY))
    train = _upload(api, rule_data[0], 400)
    job_id = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": train,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 8, "max_steps": 100000}}},
        "alignd": {"resources": {"gpus": 0}},
    }).json()["id"]  # fmt: skip
    _wait(api, job_id, {"running"})
    deadline = time.monotonic() + 120
    while not api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["train"]:
        assert time.monotonic() < deadline, "the trainer never reported a step"
        time.sleep(0.2)
    pid = json.loads((data_dir / "runs" / job_id / "run.json").read_text())["pid"]
    assert Path(f"/proc/{pid}").exists()
    cancelled = api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid):
        assert time.monotonic() < deadline, "the trainer process outlived its cancelled job"
        time.sleep(0.2)
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    assert any(e["message"] == "Job cancelled by the user" for e in events)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
