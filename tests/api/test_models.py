"""Base models kept in S3 (`POST /v1/models` with an s3:// source): checked at registration, refused
with the local store, and handed to a running job's trainer as presigned URLs it downloads into its
cache. S3 is moto's server on loopback (tests/storage/conftest.py), driven by the real minio client."""

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from alignd import auth
from alignd.app import create_app
from alignd.config import Settings
from alignd.contract import ModelFilesResponse
from alignd.jobs.state import JobStatus, transition
from alignd.storage import S3Store
from alignd_trainer.remote import COMPLETE_MARKER, download_model
from tests.api.helpers import ADMIN_KEY, ROW, bearer, new_project_key
from tests.storage.conftest import REGION, s3_endpoint, s3_store

__all__ = ["s3_endpoint"]
MODEL_FILES = {
    "config.json": b'{"model_type": "llama"}',
    "model.safetensors": secrets.token_bytes(3000),
    "tokenizer/tokenizer.json": b'{"version": "1.0"}',
}


@pytest.fixture
def s3_client(settings: Settings, s3_endpoint: str) -> Iterator[TestClient]:
    """The API with the S3 object store (a fresh bucket of its own)."""
    s3_settings = Settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        admin_key=ADMIN_KEY,
        public_url=settings.public_url,
        run_controller=False,
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=f"alignd-{secrets.token_hex(6)}",
        s3_access_key="testing",
        s3_secret_key="testing",
        s3_region=REGION,
        s3_secure=False,
    )
    with TestClient(create_app(s3_settings)) as test_client:
        yield test_client


@pytest.fixture
def model_bucket(s3_endpoint: str) -> S3Store:
    """Another bucket than the server's, holding a saved model under models/tiny/ and a non-model."""
    bucket = s3_store(s3_endpoint)
    for name, data in MODEL_FILES.items():
        bucket.put_bytes(f"models/tiny/{name}", data)
    bucket.put_bytes("models/tiny-2/config.json", b"{}")  # shares the prefix's first characters
    bucket.put_bytes("datasets/prefs.jsonl", b"{}")
    return bucket


def _register(client: TestClient, source: str, model_id: str = "tiny-s3") -> httpx.Response:
    return client.post("/v1/models", json={"id": model_id, "source": source}, headers=bearer(ADMIN_KEY))


def test_an_s3_source_needs_the_s3_store(client: TestClient) -> None:
    refused = _register(client, "s3://models/llama-3-8b")
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "source"
    assert "local object store (ALIGND_STORE=local)" in error["message"]
    assert "configure the S3 store (ALIGND_STORE=s3" in error["message"]
    assert "register its absolute path" in error["message"]


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("s3://{bucket}/datasets", "has 1 objects but no config.json"),
        ("s3://{bucket}/nothing/here", "has no objects"),
        ("s3://no-such-bucket-{token}/models/tiny", "does not exist"),
        ("s3://Upper_Case/models", "is not an S3 location"),
        ("s3://{bucket}/models/../tiny", "must be '/'-separated names"),
    ],
)
def test_s3_sources_are_checked_at_registration(
    s3_client: TestClient, model_bucket: S3Store, source: str, says: str
) -> None:
    response = _register(s3_client, source.format(bucket=model_bucket.bucket, token=secrets.token_hex(4)))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "source" and says in response.json()["error"]["message"]


def test_a_running_job_gets_download_urls_for_its_s3_model(
    s3_client: TestClient, model_bucket: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = _register(s3_client, f"s3://{model_bucket.bucket}/models/tiny/")
    assert registered.status_code == 200, registered.text
    key = new_project_key(s3_client, "team-s3")
    job = _create_job(s3_client, key, "tiny-s3")
    assert job["alignd"]["spec"]["model"] == f"s3://{model_bucket.bucket}/models/tiny"
    token = _start(s3_client, job["id"])

    listing = s3_client.get(f"/internal/v1/jobs/{job['id']}/model_files", headers=bearer(token))
    assert listing.status_code == 200, listing.text
    files = ModelFilesResponse.model_validate(listing.json())
    assert sorted(f.path for f in files.files) == sorted(MODEL_FILES), "only models/tiny/, not tiny-2"
    assert all(f.size == len(MODEL_FILES[f.path]) and f.etag for f in files.files)
    forbidden = s3_client.get(f"/internal/v1/jobs/{job['id']}/model_files", headers=bearer(key))
    assert forbidden.status_code == 401, "a project key is not a job token"

    # What the trainer does with the listing: download into its cache, then load from there.
    cached = download_model(files, tmp_path / "cache")
    assert {p.relative_to(cached).as_posix(): p.read_bytes() for p in cached.rglob("*") if p.is_file()} == (
        MODEL_FILES | {COMPLETE_MARKER: b""}
    )

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cached model is not downloaded again")

    monkeypatch.setattr(httpx, "stream", no_network)
    assert download_model(files, tmp_path / "cache") == cached, "same model, same directory"


def test_a_job_whose_model_is_a_directory_has_no_files_to_download(
    s3_client: TestClient, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    assert _register(s3_client, str(model_dir), model_id="local").status_code == 200
    key = new_project_key(s3_client, "team-dir")
    job = _create_job(s3_client, key, "local")
    token = _start(s3_client, job["id"])
    response = s3_client.get(f"/internal/v1/jobs/{job['id']}/model_files", headers=bearer(token))
    assert response.status_code == 400 and "not in object storage" in response.json()["error"]["message"]


def _create_job(client: TestClient, key: str, model: str) -> dict[str, Any]:
    body = "".join(json.dumps(ROW) + "\n" for _ in range(20)).encode()
    uploaded = client.post(
        "/v1/files", files={"file": ("t.jsonl", body)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert uploaded.status_code == 200, uploaded.text
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": model, "training_file": uploaded.json()["id"], "alignd": {"resources": {"gpus": 0}}},
        headers=bearer(key),
    )
    assert created.status_code == 200, created.text
    job: dict[str, Any] = created.json()
    return job


def _start(client: TestClient, job_id: str) -> str:
    """Move the job to running with a job token, as the controller does when it launches a run."""
    with client.app.state.alignd.sessions() as session:  # type: ignore[attr-defined]
        started = transition(session, job_id, to=JobStatus.running, event="started")
        assert started is not None
        return auth.issue_job_token(session, job_id)
