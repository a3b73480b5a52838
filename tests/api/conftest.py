"""API tests run the real app (TestClient) on SQLite and on Postgres, with the local store."""

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from peft import PeftModel
from transformers import AutoModelForCausalLM

from alignd.app import create_app
from alignd.config import Settings
from tests.db.conftest import backend, db_url, postgres
from tests.trainer.conftest import rule_data

__all__ = ["backend", "db_url", "postgres", "rule_data"]
ADMIN_KEY = "sk-alignd-admin-test-key"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "alignd",
        database_url=db_url,
        admin_key=ADMIN_KEY,
        public_url="http://testserver",
        run_controller=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_project_key(client: httpx.Client, name: str, **quotas: int) -> str:
    """A new project (with `quotas`, e.g. quota_gpus=4) and its API key, made with the admin key
    (TestClient is an httpx.Client too)."""
    project = client.post("/v1/admin/projects", json={"name": name, **quotas}, headers=bearer(ADMIN_KEY))
    assert project.status_code == 200, project.text
    key = client.post(
        f"/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=bearer(ADMIN_KEY)
    )
    assert key.status_code == 200, key.text
    value: str = key.json()["value"]
    return value


@pytest.fixture
def key(client: TestClient) -> str:
    return new_project_key(client, "team-a")


ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}


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


@pytest.fixture
def model_id(client: TestClient, tmp_path: Path) -> str:
    return register_model(client, tmp_path)


@pytest.fixture
def file_id(client: TestClient, key: str) -> str:
    return upload_rows(client, key)


def load_adapter(api: httpx.Client, job_id: str, base_model: Path, directory: Path) -> PeftModel:
    """Download a job's adapter archive through the API and load it onto its base model with peft."""
    archive = api.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts/adapter")
    assert archive.status_code == 200, archive.text
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        tar.extractall(directory, filter="data")
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), directory / "adapter")
