"""Job requests through the API: OpenAI shapes, "auto" resolved, idempotency, field-named 4xx,
cancel/pause/resume transitions and project isolation. (Running jobs: the controller's tests.)"""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN_KEY, bearer, new_project_key

ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}


@pytest.fixture
def model_id(client: TestClient, tmp_path: Path) -> str:
    model_dir = tmp_path / "base-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    response = client.post(
        "/v1/models", json={"id": "tiny", "source": str(model_dir)}, headers=bearer(ADMIN_KEY)
    )
    assert response.status_code == 200, response.text
    return "tiny"


@pytest.fixture
def file_id(client: TestClient, key: str) -> str:
    body = "".join(json.dumps(ROW) + "\n" for _ in range(20)).encode()
    response = client.post(
        "/v1/files", files={"file": ("t.jsonl", body)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _create(client: TestClient, key: str, body: dict[str, object], **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key) | headers)


def test_create_resolves_auto_and_echoes_openai_shape(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    response = _create(client, key, {
        "model": model_id, "training_file": file_id, "metadata": {"team": "search"},
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "max_length": 256}}},
    })  # fmt: skip
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued" and job["error"] is None
    assert job["method"]["dpo"]["hyperparameters"] == {
        "beta": 0.2, "batch_size": 8, "learning_rate_multiplier": 1.0, "n_epochs": 3,
    }  # fmt: skip
    assert job["alignd"]["spec"]["hyperparameters"]["max_length"] == 256
    assert job["metadata"] == {"team": "search"}
    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=bearer(key)).json()
    assert events["data"][0]["message"].startswith("Created fine-tuning job")


def test_idempotency_key_returns_the_same_job(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    body = {"model": model_id, "training_file": file_id}
    first = _create(client, key, body, **{"Idempotency-Key": "abc"}).json()
    second = _create(client, key, body, **{"Idempotency-Key": "abc"}).json()
    assert first["id"] == second["id"]
    assert len(client.get("/v1/fine_tuning/jobs", headers=bearer(key)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "nope"}, "model"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"validation_file": "file-missing"}, "validation_file"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            "method.dpo.hyperparameters.beta",
        ),
        ({"method": {"type": "supervised"}}, "method.type"),
        ({"alignd": {"lora": {"r": 0}}}, "alignd.lora.r"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, key: str, model_id: str, file_id: str, body: dict[str, object], param: str
) -> None:
    response = _create(client, key, {"model": model_id, "training_file": file_id} | body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert client.get("/v1/fine_tuning/jobs", headers=bearer(key)).json()["data"] == []


def test_cancel_pause_resume_follow_the_state_machine(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    job_id = _create(client, key, {"model": model_id, "training_file": file_id}).json()["id"]
    paused = client.post(f"/v1/fine_tuning/jobs/{job_id}/pause", headers=bearer(key))
    assert paused.status_code == 409, "a queued job has no run to checkpoint"
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(key)).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    again = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(key))
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]


def test_list_filters_by_metadata_and_paginates(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    ids = [
        _create(client, key, {"model": model_id, "training_file": file_id, "metadata": {"n": str(i)}}).json()[
            "id"
        ]
        for i in range(3)
    ]
    only = client.get("/v1/fine_tuning/jobs", params={"metadata[n]": "1"}, headers=bearer(key)).json()
    assert [j["id"] for j in only["data"]] == [ids[1]]
    page = client.get("/v1/fine_tuning/jobs?limit=2", headers=bearer(key)).json()
    rest = client.get(f"/v1/fine_tuning/jobs?limit=2&after={page['last_id']}", headers=bearer(key)).json()
    assert page["has_more"] is True and rest["has_more"] is False
    assert sorted(j["id"] for j in page["data"] + rest["data"]) == sorted(ids), "every job once, no overlap"


def test_another_project_cannot_see_use_or_cancel(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    job_id = _create(client, key, {"model": model_id, "training_file": file_id}).json()["id"]
    other = new_project_key(client, "team-b")
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=bearer(other)).status_code == 404
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(other)).status_code == 404
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=bearer(other)).status_code == 404
    stolen = _create(client, other, {"model": model_id, "training_file": file_id})
    assert stolen.status_code == 400 and stolen.json()["error"]["param"] == "training_file"


def test_models_list_and_registration_errors(client: TestClient, key: str, model_id: str) -> None:
    listed = client.get("/v1/models", headers=bearer(key)).json()
    assert [m["id"] for m in listed["data"]] == ["tiny"]
    assert (
        client.post("/v1/models", json={"id": "x", "source": "/nope"}, headers=bearer(ADMIN_KEY)).status_code
        == 400
    )
    assert (
        client.post("/v1/models", json={"id": "x", "source": "/nope"}, headers=bearer(key)).status_code == 404
    )


def test_events_stream_as_server_sent_events_until_the_job_ends(
    client: TestClient, key: str, model_id: str, file_id: str
) -> None:
    job_id = _create(client, key, {"model": model_id, "training_file": file_id}).json()["id"]
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(key))
    with client.stream(
        "GET", f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", headers=bearer(key)
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [
            json.loads(line[len("data: ") :]) for line in response.iter_lines() if line.startswith("data: ")
        ]
    assert [f["message"] for f in frames] == [
        f"Created fine-tuning job: {job_id}",
        "Job cancelled by the user",
    ]
    assert all(f["object"] == "fine_tuning.job.event" for f in frames)
