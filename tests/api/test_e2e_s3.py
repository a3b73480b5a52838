"""End to end with the S3 object store (moto on loopback): a base model registered as s3://bucket/prefix
is downloaded by the real trainer (local launcher) through presigned URLs into its cache and trained;
data, checkpoints, the adapter, the merged model and the results file all live in S3."""

import csv
import io
import json
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, TERMINAL, bearer, new_project_key, wait_status
from tests.storage.conftest import REGION, s3_endpoint, s3_store

__all__ = ["s3_endpoint"]
pytestmark = pytest.mark.slow


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trainer's model cache (its XDG_CACHE_HOME), set before the server copies its environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "alignd" / "models"


@pytest.fixture
def api(tmp_path: Path, s3_endpoint: str, model_cache: Path) -> Iterator[httpx.Client]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "alignd",
        admin_key=ADMIN_KEY,
        public_url=url,
        controller_interval_seconds=0.2,
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=f"alignd-{secrets.token_hex(6)}",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_region=REGION,
        s3_secure=False,
    )
    with BackgroundServer(settings, "127.0.0.1", port), httpx.Client(base_url=url, timeout=60) as client:
        client.headers.update(bearer(new_project_key(client, "s3")))
        yield client


def test_a_managed_run_loads_its_base_model_from_s3(
    api: httpx.Client,
    s3_endpoint: str,
    model_cache: Path,
    tiny_model_dir: Path,
    rule_data: tuple[Path, Path],
) -> None:
    models = s3_store(s3_endpoint)
    for path in sorted(p for p in tiny_model_dir.rglob("*") if p.is_file()):
        models.put_bytes(f"models/tiny/{path.relative_to(tiny_model_dir).as_posix()}", path.read_bytes())
    source = f"s3://{models.bucket}/models/tiny"
    registered = api.post("/v1/models", json={"id": "tiny-s3", "source": source}, headers=bearer(ADMIN_KEY))
    assert registered.status_code == 200, registered.text

    rows = b"".join(rule_data[0].read_bytes().splitlines(keepends=True)[:200])
    uploaded = api.post("/v1/files", files={"file": ("train.jsonl", rows)}, data={"purpose": "fine-tune"})
    assert uploaded.status_code == 200, uploaded.text
    created = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny-s3", "training_file": uploaded.json()["id"],
        "method": {"type": "dpo", "dpo": {"hyperparameters": {
            "batch_size": 8, "learning_rate": 2e-3, "max_steps": 6, "save_steps": 3,
        }}},
        "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}},
    })  # fmt: skip
    assert created.status_code == 200, created.text
    job = wait_status(api, created.json()["id"], TERMINAL, timeout=300)
    events = api.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert job["status"] == "succeeded", json.dumps(events, indent=1)

    [cached] = [p for p in model_cache.iterdir() if p.is_dir()]
    assert (cached / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()
    assert any(e["message"].startswith(f"loading {cached}") for e in events), "trained from the download"
    assert job["estimated_finish"] is None and job["alignd"]["step"] == job["alignd"]["total_steps"] == 6
    assert api.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter").status_code == 200
    merged = api.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/merged")
    assert merged.status_code == 200, merged.text
    with tarfile.open(fileobj=io.BytesIO(merged.content), mode="r:gz") as archive:
        assert {"merged/model.safetensors", "merged/config.json"} <= set(archive.getnames())

    [results_id] = job["result_files"]
    results = api.get(f"/v1/files/{results_id}/content")
    assert results.status_code == 200
    table = list(csv.DictReader(io.StringIO(results.text)))
    assert [int(r["step"]) for r in table] == list(range(1, 7))
    assert all(float(r["train_loss"]) > 0 for r in table)
