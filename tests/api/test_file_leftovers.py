"""Deleting a file is safe to interrupt: when the store refuses the delete, the file is gone from the
API at once (404, not listed, not usable by a new job) but its bytes count against the quota until
they are really removed, by a retried DELETE or by the sweeper. And the sweeper runs in the leader's
controller loop, reporting what it removed in /metrics."""

import json
import re
import secrets
import time

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr

from alignd.app import create_app
from alignd.config import Settings
from alignd.storage.local import TMP_DIR
from tests.api.helpers import ADMIN_KEY, bearer
from tests.storage.restartable_moto import Moto, moto

__all__ = ["moto"]
BODY = b'{"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}\n'


def _project_key(client: httpx.Client, quota_stored_bytes: int | None = None) -> str:
    project = client.post(
        "/v1/admin/projects",
        json={"name": "deleters", "quota_stored_bytes": quota_stored_bytes},
        headers=bearer(ADMIN_KEY),
    ).json()
    key = client.post(f"/v1/admin/projects/{project['id']}/api_keys", json={}, headers=bearer(ADMIN_KEY))
    value: str = key.json()["value"]
    return value


def _upload(client: httpx.Client, key: str) -> httpx.Response:
    return client.post(
        "/v1/files", files={"file": ("p.jsonl", BODY)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )


def test_a_delete_the_store_refuses_hides_the_file_and_a_retry_finishes_it(
    settings: Settings, moto: Moto
) -> None:
    s3 = settings.model_copy(
        update={
            "store": "s3",
            "s3_endpoint": moto.endpoint,
            "s3_bucket": f"alignd-{secrets.token_hex(6)}",
            "s3_access_key": SecretStr("testing"),
            "s3_secret_key": SecretStr("testing"),
            "s3_secure": False,
            "s3_region": "us-east-1",
        }
    )
    with TestClient(create_app(s3)) as client:
        key = _project_key(client, quota_stored_bytes=len(BODY))
        file_id = _upload(client, key).json()["id"]
        moto.stop()

        refused = client.delete(f"/v1/files/{file_id}", headers=bearer(key))

        assert refused.status_code == 503, refused.text
        assert client.get(f"/v1/files/{file_id}", headers=bearer(key)).status_code == 404
        assert client.get(f"/v1/files/{file_id}/content", headers=bearer(key)).status_code == 404
        assert client.get("/v1/files", headers=bearer(key)).json()["data"] == []
        job = client.post(
            "/v1/fine_tuning/jobs",
            json={"model": "tiny", "training_file": file_id, "method": {"type": "dpo"}},
            headers=bearer(key),
        )
        assert job.status_code == 400 and job.json()["error"]["code"] == "file_not_found", job.text
        moto.start()
        # Its bytes are still in the store, so they still count: the quota has no room for another.
        assert _upload(client, key).status_code == 429

        retried = client.delete(f"/v1/files/{file_id}", headers=bearer(key))

        assert retried.status_code == 200 and retried.json()["deleted"] is True, retried.text
        assert client.app.state.alignd.store.list("files/") == []  # type: ignore[attr-defined]
        assert _upload(client, key).status_code == 200


def _removed(metrics: str, kind: str) -> float:
    found = re.search(rf'^alignd_sweeper_removed_total\{{kind="{kind}"\}} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_controller_loop_sweeps_and_reports_what_it_removed(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        key = _project_key(client)
        kept = _upload(client, key).json()
    store_dir = settings.resolved_store_dir()
    (store_dir / "files" / "file-orphan").write_bytes(BODY)
    (store_dir / TMP_DIR / "put-interrupted").write_bytes(BODY[:10])
    sweeping = settings.model_copy(
        update={"run_controller": True, "sweeper_grace_seconds": 0, "sweeper_interval_seconds": 0.05}
    )

    with TestClient(create_app(sweeping)) as client:
        deadline = time.monotonic() + 30
        metrics = client.get("/metrics").text
        while not (_removed(metrics, "unregistered") and _removed(metrics, "staged")):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
            metrics = client.get("/metrics").text
        assert (_removed(metrics, "unregistered"), _removed(metrics, "staged")) == (1, 1), metrics
        assert sorted(p.name for p in (store_dir / "files").iterdir()) == [kept["id"]]
        assert list((store_dir / TMP_DIR).iterdir()) == []
        content = client.get(f"/v1/files/{kept['id']}/content", headers=bearer(key))
        assert content.content == BODY
        assert json.loads(content.content)["chosen"] == " apple."
