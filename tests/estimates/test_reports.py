"""What a job's model adds to its files' quality reports, on SQLite and on Postgres (the app in a
TestClient, which runs a route's background task before it returns, so no waiting is needed)."""

import json
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.api.conftest import backend, client, db_url, key, postgres, settings
from tests.api.helpers import ADMIN_KEY, bearer

__all__ = ["backend", "client", "db_url", "key", "postgres", "settings"]
ROWS = [
    {
        "prompt": f"Question {i}: name a fruit.",
        "chosen": " An apple." * (1 + 10 * (i % 2)),
        "rejected": " No.",
    }
    for i in range(10)
]


def _upload(client: TestClient, key: str, rows: list[dict[str, Any]]) -> str:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    response = client.post(
        "/v1/files", files={"file": ("d.jsonl", body)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _truncation(client: httpx.Client, key: str, file_id: str) -> Any:
    return client.get(f"/v1/files/{file_id}/report", headers=bearer(key)).json()["truncation"]


def test_a_job_and_then_an_estimate_store_their_truncation_share(
    client: TestClient, key: str, tiny_model_dir: Path
) -> None:
    assert client.post(
        "/v1/models", json={"id": "tiny", "source": str(tiny_model_dir)}, headers=bearer(ADMIN_KEY)
    ).is_success
    training = _upload(client, key, ROWS)
    validation = _upload(client, key, ROWS[:3])
    body = {
        "model": "tiny",
        "training_file": training,
        "validation_file": validation,
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"max_length": 32}}},
        "alignd": {"resources": {"gpus": 0}},
    }
    assert _truncation(client, key, training) is None

    job = client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key)).json()

    at_creation = _truncation(client, key, training)
    assert (at_creation["model"], at_creation["max_length"]) == ("tiny", 32)
    assert 0 < at_creation["truncated_share"] < 1
    assert _truncation(client, key, validation)["max_length"] == 32
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=bearer(key)).json()["data"]
    overlap = [e for e in events if e["level"] == "warn"]
    assert len(overlap) == 1 and overlap[0]["message"].startswith("3 of 3 validation pairs share a prompt")

    body["method"] = {"type": "dpo", "dpo": {"hyperparameters": {"max_length": 4096}}}
    estimate = client.post("/v1/fine_tuning/jobs/estimate", json=body, headers=bearer(key))
    assert estimate.status_code == 200, estimate.text

    latest = _truncation(client, key, training)
    assert (latest["max_length"], latest["truncated_share"], latest["truncated_pairs"]) == (4096, 0.0, 0)
    jobs = client.get("/v1/fine_tuning/jobs", headers=bearer(key)).json()["data"]
    assert [j["id"] for j in jobs] == [job["id"]]
