"""Webhooks through the running app: its own dispatcher thread (started with the controller) delivers to a
real receiver, and the deliveries API shows every attempt. A cancel through the API is the event; the
controller makes one pass at start (before any job exists) and then waits an hour, so it never launches a
trainer. On SQLite and Postgres."""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alignd.app import create_app
from alignd.config import Settings
from tests.api.conftest import ADMIN_KEY, bearer

from .conftest import Receiver

ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "alignd",
        database_url=db_url,
        admin_key=ADMIN_KEY,
        public_url="http://testserver",
        run_controller=True,
        controller_interval_seconds=3600,
        webhook_poll_seconds=0.05,
        webhook_backoff_seconds=0.05,
        webhook_max_attempts=3,
        webhook_timeout_seconds=5.0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def project_key(live: TestClient, tmp_path: Path) -> str:
    admin = bearer(ADMIN_KEY)
    project = live.post("/v1/admin/projects", json={"name": "hooks"}, headers=admin)
    key = live.post(f"/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=admin)
    model_dir = tmp_path / "base-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    registered = live.post("/v1/models", json={"id": "tiny", "source": str(model_dir)}, headers=admin)
    assert registered.status_code == 200, registered.text
    value: str = key.json()["value"]
    return value


def _cancelled_job(client: TestClient, key: str) -> str:
    data = "".join(json.dumps(ROW) + "\n" for _ in range(20)).encode()
    upload = client.post(
        "/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert upload.status_code == 200, upload.text
    body = {"model": "tiny", "training_file": upload.json()["id"], "method": {"type": "dpo"}}
    job = client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key))
    assert job.status_code == 200, job.text
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel", headers=bearer(key))
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    job_id: str = job.json()["id"]
    return job_id


def _endpoint(client: TestClient, key: str, receiver: Receiver) -> str:
    created = client.post("/v1/webhooks", json={"url": receiver.url}, headers=bearer(key))
    assert created.status_code == 200, created.text
    receiver.secret = created.json()["secret"]
    endpoint_id: str = created.json()["id"]
    return endpoint_id


def _settled_delivery(
    client: TestClient, key: str, endpoint_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The endpoint's one delivery, once `done` holds (the dispatcher writes results after sending)."""
    deadline = time.monotonic() + 30
    while True:
        page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=bearer(key)).json()
        if page["data"] and done(page["data"][0]):
            assert len(page["data"]) == 1
            delivery: dict[str, Any] = page["data"][0]
            return delivery
        assert time.monotonic() < deadline, page
        time.sleep(0.05)


def test_a_cancel_is_delivered_signed_and_the_attempt_is_listed(
    live: TestClient, project_key: str, receiver: Receiver
) -> None:
    endpoint_id = _endpoint(live, project_key, receiver)
    job_id = _cancelled_job(live, project_key)

    [request] = receiver.wait_for(1)
    assert request.signature_ok
    assert request.event["type"] == "fine_tuning.job.cancelled"
    assert request.event["data"] == {"id": job_id}

    delivery = _settled_delivery(live, project_key, endpoint_id, lambda d: d["status"] != "pending")
    assert delivery["object"] == "webhook_endpoint.delivery"
    assert delivery["event_id"] == request.headers["webhook-id"] == request.event["id"]
    assert (delivery["event_type"], delivery["data"], delivery["webhook_id"]) == (
        "fine_tuning.job.cancelled",
        {"id": job_id},
        endpoint_id,
    )
    assert (delivery["status"], delivery["attempt_count"], delivery["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [(1, 200, None)]
    assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None

    scraped = live.get("/metrics").text
    assert (
        'alignd_webhook_deliveries_total{event_type="fine_tuning.job.cancelled",outcome="delivered"} 1.0'
        in scraped
    )


def test_retries_and_giving_up_are_visible_in_the_deliveries(
    live: TestClient, project_key: str, receivers: Callable[[], Receiver]
) -> None:
    flaky, broken = receivers(), receivers()
    flaky.answers = [500, 502]
    broken.default = 503
    flaky_id = _endpoint(live, project_key, flaky)
    broken_id = _endpoint(live, project_key, broken)
    _cancelled_job(live, project_key)

    delivered = _settled_delivery(live, project_key, flaky_id, lambda d: d["status"] != "pending")
    assert delivered["status"] == "delivered" and delivered["attempt_count"] == 3
    assert [(a["attempt"], a["status_code"]) for a in delivered["attempts"]] == [(1, 500), (2, 502), (3, 200)]
    assert delivered["attempts"][0]["error"] == "the endpoint answered HTTP 500: receiver says no"
    assert all(r.signature_ok for r in flaky.wait_for(3))

    failed = _settled_delivery(live, project_key, broken_id, lambda d: d["status"] != "pending")
    assert (failed["status"], failed["attempt_count"], failed["last_status_code"]) == ("failed", 3, 503)
    assert failed["last_error"] == "the endpoint answered HTTP 503: receiver says no"
    assert failed["next_attempt_at"] is None
    assert [a["attempt"] for a in failed["attempts"]] == [1, 2, 3]
