"""Job requests through the API: OpenAI shapes, "auto" resolved, idempotency, field-named 4xx,
cancel/pause/resume transitions, project isolation, quotas, list order and the results file.
(Running jobs: the controller's tests.)"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from alignd.app import create_app
from alignd.config import GpuProfile, Settings
from alignd.contract import TerminationSummary
from alignd.controller import Controller
from alignd.jobs.state import JobStatus, transition
from alignd.launchers import LocalLauncher
from alignd.models import JobModel, MetricModel
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key, register_model, upload_rows


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
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"method": {"type": "supervised"}}, "training_file"),
        ({"alignd": {"init_from_checkpoint": "ftckpt-nope"}}, "alignd.init_from_checkpoint"),
        ({"model": "ft:nope:proj:x:ftjob-1"}, "model"),
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


# ---- quotas --------------------------------------------------------------------------------------------


def _gpus(gpus: int, nodes: int = 1) -> dict[str, object]:
    return {"alignd": {"resources": {"gpus": gpus, "nodes": nodes}}}


def _move(client: TestClient, job_id: str, *statuses: str) -> None:
    """Walk a job through statuses as the controller would (no launcher in these tests)."""
    with client.app.state.alignd.sessions() as session:  # type: ignore[attr-defined]
        for status in statuses:
            assert transition(session, job_id, to=JobStatus(status), event=f"to {status}") is not None


def test_concurrent_job_quota_answers_429_and_counts_only_jobs_in_flight(
    client: TestClient, model_id: str
) -> None:
    key = new_project_key(client, "small", quota_concurrent_jobs=2)
    body = {"model": model_id, "training_file": upload_rows(client, key)} | _gpus(0)
    first = _create(client, key, body, **{"Idempotency-Key": "first"}).json()["id"]
    second = _create(client, key, body).json()["id"]

    refused = _create(client, key, body)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "quota_exceeded")
    assert "project small has 2 jobs queued or running and its quota is 2" in error["message"]
    assert "wait for one to finish" in error["message"] and "ask an admin" in error["message"]

    replay = _create(client, key, body, **{"Idempotency-Key": "first"})
    assert replay.status_code == 200 and replay.json()["id"] == first, "a replay is not a new job"

    _move(client, first, "running", "pausing")
    assert _create(client, key, body).status_code == 429, "a pausing job still holds its slot"
    _move(client, first, "paused")
    third = _create(client, key, body)
    assert third.status_code == 200, "a paused job holds no slot"
    client.post(f"/v1/fine_tuning/jobs/{second}/cancel", headers=bearer(key))
    assert _create(client, key, body).status_code == 200, "a cancelled job holds no slot"


def test_gpu_quota_counts_gpus_times_nodes(client: TestClient, model_id: str) -> None:
    key = new_project_key(client, "gpus", quota_gpus=4, quota_concurrent_jobs=10)
    body = {"model": model_id, "training_file": upload_rows(client, key)}
    assert _create(client, key, body | _gpus(2)).status_code == 200

    refused = _create(client, key, body | _gpus(2, nodes=2))
    assert refused.status_code == 429
    message = refused.json()["error"]["message"]
    assert "use 2 of its 4 GPUs and this job needs 4 more" in message
    assert "wait for a job to finish" in message and "ask an admin to raise quota_gpus" in message

    too_big = _create(client, key, body | _gpus(8))
    assert too_big.status_code == 429 and "this job needs 8 GPUs" in too_big.json()["error"]["message"]
    assert _create(client, key, body | _gpus(2)).status_code == 200, "exactly at the quota fits"
    assert _create(client, key, body | _gpus(0)).status_code == 200, "CPU jobs need no GPU"
    assert _create(client, key, body | _gpus(1)).status_code == 429


# ---- list order ----------------------------------------------------------------------------------------


def _descending_ids(prefix: str) -> Iterator[str]:
    """Ids that sort backwards: each is smaller than the one before, unlike the creation order."""
    return (f"{prefix}{n:024x}" for n in range(10**6, 0, -1))


def test_jobs_made_within_a_second_list_in_creation_order(
    client: TestClient, key: str, model_id: str, file_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _descending_ids("ftjob-")
    monkeypatch.setattr("alignd.jobs.service.new_id", lambda prefix: next(ids))
    body = {"model": model_id, "training_file": file_id}
    created = [_create(client, key, body).json() for _ in range(4)]  # the default quota: 4 jobs
    assert len({j["created_at"] for j in created}) <= 2, "made within a second or two"

    newest_first = [j["id"] for j in reversed(created)]
    listed = client.get("/v1/fine_tuning/jobs", headers=bearer(key)).json()
    assert [j["id"] for j in listed["data"]] == newest_first
    page, pages = client.get("/v1/fine_tuning/jobs?limit=2", headers=bearer(key)).json(), []
    while True:
        pages += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            break
        page = client.get(f"/v1/fine_tuning/jobs?limit=2&after={page['last_id']}", headers=bearer(key)).json()
    assert pages == newest_first


# ---- results file --------------------------------------------------------------------------------------


def test_a_succeeded_job_has_a_results_file(
    client: TestClient, key: str, model_id: str, file_id: str, settings: Settings
) -> None:
    job_id = _create(client, key, {"model": model_id, "training_file": file_id}).json()["id"]
    state = client.app.state.alignd  # type: ignore[attr-defined]
    _move(client, job_id, "running")
    with state.sessions() as session:
        for step, loss in ((1, 0.69), (2, 0.61), (3, 0.55)):
            values = {"loss": loss, "rewards/margins": 0.1 * step, "rewards/accuracies": 0.5 + 0.1 * step}
            session.add(MetricModel(job_id=job_id, step=step, epoch=step / 3, values=values))
        session.add(MetricModel(job_id=job_id, step=2, epoch=2 / 3, values={"loss": 0.6, "num_tokens": 5.0}))
        eval_values = {"eval_loss": 0.5, "eval_rewards/margins": 0.4, "eval_rewards/accuracies": 0.75}
        session.add(MetricModel(job_id=job_id, step=3, split="eval", epoch=1.0, values=eval_values))
        session.commit()
        job = session.get(JobModel, job_id)
        assert job is not None
        _set_run_finished(settings, job, exit_code=0)
    controller = Controller(
        sessions=state.sessions,
        launcher=LocalLauncher(settings.resolved_data_dir() / "runs"),
        store=state.store,
        settings=settings,
    )
    controller.sync_active()
    controller.sync_active()  # the job has ended: nothing more happens

    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=bearer(key)).json()
    assert job["status"] == "succeeded" and len(job["result_files"]) == 1
    [results_id] = job["result_files"]
    content = client.get(f"/v1/files/{results_id}/content", headers=bearer(key))
    assert content.status_code == 200
    assert content.text.splitlines() == [
        "step,epoch,train_loss,train_rewards_margin,train_rewards_accuracy,"
        "valid_loss,valid_rewards_margin,valid_rewards_accuracy",
        "1,0.3333333333333333,0.69,0.1,0.6,,,",
        "2,0.6666666666666666,0.6,0.2,0.7,,,",
        "3,1.0,0.55,0.30000000000000004,0.8,0.5,0.4,0.75",
    ]
    listed = client.get("/v1/files", headers=bearer(key)).json()["data"]
    assert {f["id"]: f["purpose"] for f in listed}[results_id] == "fine-tune-results"
    by_purpose = {
        purpose: [
            f["id"] for f in client.get(f"/v1/files?purpose={purpose}", headers=bearer(key)).json()["data"]
        ]
        for purpose in ("fine-tune", "fine-tune-results")
    }
    assert by_purpose["fine-tune-results"] == [results_id]
    assert by_purpose["fine-tune"] and results_id not in by_purpose["fine-tune"]
    other = new_project_key(client, "team-b")
    assert client.get(f"/v1/files/{results_id}/content", headers=bearer(other)).status_code == 404
    as_data = _create(client, key, {"model": model_id, "training_file": results_id})
    assert as_data.status_code == 400 and as_data.json()["error"]["param"] == "training_file"
    assert "fine-tune-results" in as_data.json()["error"]["message"]


def _set_run_finished(settings: Settings, job: JobModel, *, exit_code: int) -> None:
    """What the local launcher finds when a trainer exited: no live process, its exit summary."""
    run = settings.resolved_data_dir() / "runs" / job.id
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"pid": 999_999_999, "attempt": 1}))
    summary = TerminationSummary(exit_code=exit_code, reason="Completed", message="training finished")
    (run / "termination.json").write_text(summary.model_dump_json())


def test_on_kubernetes_an_unknown_gpu_type_is_refused_at_creation(settings: Settings, tmp_path: Path) -> None:
    cluster = settings.model_copy(
        update={"launcher": "kubernetes", "k8s_gpu_profiles": {"h100": GpuProfile(), "l40s": GpuProfile()}}
    )
    with TestClient(create_app(cluster)) as client:
        key = new_project_key(client, "gpu-types")
        body = {"model": register_model(client, tmp_path), "training_file": upload_rows(client, key)}
        refused = _create(client, key, body | {"alignd": {"resources": {"gpus": 1, "gpu_type": "a100"}}})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "alignd.resources.gpu_type" and "h100, l40s" in error["message"]
        accepted = _create(client, key, body | {"alignd": {"resources": {"gpus": 1, "gpu_type": "l40s"}}})
        assert accepted.status_code == 200, accepted.text


def test_on_kubernetes_a_queue_the_admin_did_not_allow_is_refused_at_creation(
    settings: Settings, tmp_path: Path
) -> None:
    cluster = settings.model_copy(
        update={
            "launcher": "kubernetes",
            "k8s_kueue_queue_name": "ml-default",
            "k8s_kueue_allowed_queues": ["ml-urgent"],
        }
    )
    with TestClient(create_app(cluster)) as client:
        key = new_project_key(client, "queues")
        body = {"model": register_model(client, tmp_path), "training_file": upload_rows(client, key)}
        refused = _create(client, key, body | {"alignd": {"resources": {"gpus": 1, "queue": "ml-vip"}}})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "alignd.resources.queue" and "ml-default, ml-urgent" in error["message"]
        accepted = _create(client, key, body | {"alignd": {"resources": {"gpus": 1, "queue": "ml-urgent"}}})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["alignd"]["spec"]["resources"]["queue"] == "ml-urgent"
