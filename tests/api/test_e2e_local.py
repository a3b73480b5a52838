"""End to end on the embedded defaults: a live API server (uvicorn on loopback), its controller,
the local launcher and the real trainer on a tiny model. Upload -> job -> events and metrics ->
checkpoints -> adapter downloaded and loaded with peft; a LoRA job's merged model downloaded and loaded
with transformers alone."""

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from click.testing import Result
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from alignd.cli import app
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import (
    ADMIN_KEY,
    TERMINAL,
    bearer,
    load_adapter,
    new_project_key,
    proc_state,
    upload_lines,
    wait_status,
)

pytestmark = pytest.mark.slow


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


def test_upload_train_watch_download(
    api: httpx.Client, tiny_model_dir: Path, rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    registered = api.post(
        "/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY)
    )
    assert registered.status_code == 200, registered.text
    train, heldout = upload_lines(api, rule_data[0], 400), upload_lines(api, rule_data[1], 64)
    created = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": train, "validation_file": heldout, "suffix": "demo",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.5, "batch_size": 8, "learning_rate": 2e-3,
            "max_steps": 12, "save_steps": 4, "eval_steps": 6,
        }}},
        "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}},
    })  # fmt: skip
    assert created.status_code == 200, created.text
    job = wait_status(api, created.json()["id"], TERMINAL)
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
    train = upload_lines(api, rule_data[0], 400)
    job_id = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": train,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 8, "max_steps": 100000}}},
        "alignd": {"resources": {"gpus": 0}},
    }).json()["id"]  # fmt: skip
    wait_status(api, job_id, {"running"})
    deadline = time.monotonic() + 120
    while not api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["train"]:
        assert time.monotonic() < deadline, "the trainer never reported a step"
        time.sleep(0.2)
    pid = json.loads((data_dir / "runs" / job_id / "run.json").read_text())["pid"]
    assert Path(f"/proc/{pid}").exists()
    cancelled = api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and "zombie" not in proc_state(pid):
        assert time.monotonic() < deadline, "the trainer process outlived its cancelled job"
        time.sleep(0.2)
    events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()["data"]
    assert any(e["message"] == "Job cancelled by the user" for e in events)


def _create(api: httpx.Client, train: str, alignd: dict[str, Any], max_steps: int) -> httpx.Response:
    return api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": train,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {
            "batch_size": 4, "learning_rate": 2e-3, "max_steps": max_steps,
        }}},
        "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}} | alignd,
    })  # fmt: skip


def _succeeded(api: httpx.Client, job_id: str) -> dict[str, Any]:
    job = wait_status(api, job_id, TERMINAL)
    assert job["status"] == "succeeded", json.dumps(api.get(f"/v1/fine_tuning/jobs/{job_id}/events").json())
    return job


def _download_merged(api: httpx.Client, job_id: str, out: Path) -> Result:
    """`alignd adapters download JOB --merged`, as a user runs it."""
    key = api.headers["Authorization"].removeprefix("Bearer ")
    args = ["adapters", "download", job_id, "--merged", "--out", str(out)]
    return CliRunner().invoke(app, args, env={"ALIGND_API_URL": str(api.base_url), "ALIGND_API_KEY": key})


def test_lora_job_stores_a_merged_model_equal_to_base_plus_adapter(
    api: httpx.Client, tiny_model_dir: Path, rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    api.post("/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY))
    created = _create(api, upload_lines(api, rule_data[0], 64), {}, max_steps=2)
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    assert created.json()["alignd"]["spec"]["merged_weights"] is True
    early = api.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts/merged")
    if early.status_code != 200:  # the job may, rarely, have finished already
        assert early.status_code == 404 and early.json()["error"]["code"] == "merged_not_ready", early.text
    _succeeded(api, job_id)

    archive = api.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts/merged")
    assert archive.status_code == 200, archive.text
    assert archive.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    expected = {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert {f"merged/{name}" for name in expected} <= names
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.dtype == torch.float32 and not any("lora" in name for name, _ in merged.named_parameters())
    adapted = load_adapter(api, job_id, tiny_model_dir, tmp_path / "adapter-download").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    inputs = tokenizer(
        ["Name a fruit.", "Which animal barks?", "a b c d e f g"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
        adapted_logits = adapted(**inputs).logits
        base_logits = base(**inputs).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=0)
    assert (merged_logits - base_logits).abs().max() > 1e-4, "the adapter changed nothing; the check is void"

    cli = _download_merged(api, job_id, tmp_path / "cli-merged.tar.gz")
    assert cli.exit_code == 0, cli.output
    with tarfile.open(tmp_path / "cli-merged.tar.gz", mode="r:gz") as tar:
        assert set(tar.getnames()) == names


def test_merged_model_is_absent_with_a_reason(
    api: httpx.Client, data_dir: Path, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    api.post("/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY))
    train = upload_lines(api, rule_data[0], 64)
    off = _create(api, train, {"merged_weights": False}, max_steps=1).json()["id"]
    full = _create(api, train, {"training_type": "full"}, max_steps=1)
    assert full.status_code == 200, full.text
    full_id = full.json()["id"]
    assert full.json()["alignd"]["spec"]["merged_weights"] is False

    refused = _create(api, train, {"training_type": "full", "merged_weights": True}, max_steps=1)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "alignd.merged_weights"
    assert "LoRA jobs only" in refused.json()["error"]["message"]

    not_lora = api.get(f"/v1/fine_tuning/jobs/{full_id}/artifacts/merged")
    assert not_lora.status_code == 404 and not_lora.json()["error"]["code"] == "merged_not_applicable"
    assert "full fine-tuning" in not_lora.json()["error"]["message"]
    assert "artifacts/adapter" in not_lora.json()["error"]["message"]
    api.post(f"/v1/fine_tuning/jobs/{full_id}/cancel")

    _succeeded(api, off)
    turned_off = api.get(f"/v1/fine_tuning/jobs/{off}/artifacts/merged")
    assert turned_off.status_code == 404 and turned_off.json()["error"]["code"] == "merged_weights_off"
    assert "alignd.merged_weights false" in turned_off.json()["error"]["message"]
    cli = _download_merged(api, off, data_dir / "merged.tar.gz")
    assert cli.exit_code == 1 and "merged_weights_off" in cli.output
    stored = data_dir / "data" / "jobs" / off
    assert (stored / "adapter").is_dir() and not (stored / "merged").exists()
