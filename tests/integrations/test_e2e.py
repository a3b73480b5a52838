"""A job mirrored into W&B and MLflow by the control plane, through a live server and the openai SDK."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from alignd.server import free_port
from alignd_trainer.synthetic import preference_rows
from tests.api.helpers import bearer
from tests.integrations.conftest import MODEL, Tracking, put_credentials
from tests.integrations.wandb_runs import read_run
from tests.sdk.conftest import TERMINAL, Server, jsonl, until

pytestmark = pytest.mark.slow

HYPERPARAMETERS: dict[str, Any] = {
    "beta": 0.5,
    "batch_size": 8,
    "n_epochs": 1,
    "learning_rate": 2e-3,
    "max_steps": 6,
    "save_steps": 100000,
}
OPTIONS: dict[str, Any] = {"training_type": "lora", "lora": {"r": 4, "alpha": 8}, "resources": {"gpus": 0}}
EXTRA_BODY = {"method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}}, "alignd": OPTIONS}
WANDB: Any = {
    "type": "wandb",
    "wandb": {"project": "dpo-runs", "name": "sdk-run", "tags": ["team-a"]},
}
MLFLOW_ONLY: Any = {"type": "mlflow", "mlflow": {"experiment_name": "nowhere"}}
MLFLOW_TOKEN = "mlflow-token-do-not-echo-7f3a"
WANDB_KEY = "wandb-key-do-not-echo-19c2"


def _training_file(client: Any, tmp_path: Path) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(preference_rows(64, seed=3, fmt="openai")))
    return str(client.files.create(file=path.open("rb"), purpose="fine-tune").id)


def _events(server: Server, key: str, job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100}, headers=bearer(key)
    )
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _integration_runs(server: Server, job_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(server.data_dir / "alignd.db") as db:
        rows = db.execute("SELECT type, status FROM integration_runs WHERE job_id = ?", (job_id,))
        return sorted(rows.fetchall())


def test_sdk_job_with_wandb_and_mlflow(live: Server, mlflow_server: Tracking, tmp_path: Path) -> None:
    key = live.project_key("mirrored")
    set_mlflow = put_credentials(
        live, key, "mlflow", {"tracking_uri": mlflow_server.url, "token": MLFLOW_TOKEN}
    )
    set_wandb = put_credentials(live, key, "wandb", {"api_key": WANDB_KEY})
    assert set_mlflow.status_code == set_wandb.status_code == 200, set_mlflow.text
    client = live.client(key)  # strict: the job object must validate against the SDK's own model
    mlflow: Any = {"type": "mlflow", "mlflow": {"experiment_name": "alignd-e2e", "tags": {"team": "a"}}}

    created = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=_training_file(client, tmp_path),
        integrations=[WANDB, mlflow],  # the SDK's type knows only wandb; it sends any entry
        extra_body={
            "method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}},
            "alignd": OPTIONS,
        },
    )

    # As OpenAI returns it: the W&B entry in `integrations`, every entry in the alignd extension.
    assert created.integrations is not None
    assert [i.model_dump() for i in created.integrations] == [
        {
            "type": "wandb",
            "wandb": {"project": "dpo-runs", "entity": None, "name": "sdk-run", "tags": ["team-a"]},
        }
    ]
    assert [i["type"] for i in (created.model_extra or {})["alignd"]["integrations"]] == ["wandb", "mlflow"]
    job = until(
        lambda: j if (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL else None,
        "the job finished",
        timeout=240,
    )
    assert job.status == "succeeded", job.error
    assert job.integrations == created.integrations
    until(
        lambda: _integration_runs(live, job.id) == [("mlflow", "finished"), ("wandb", "finished")],
        "both integrations finished",
    )
    metrics = httpx.get(f"{live.url}/v1/fine_tuning/jobs/{job.id}/metrics", headers=bearer(key)).json()
    losses = {point["step"]: point["values"]["loss"] for point in metrics["train"]}
    assert len(losses) == HYPERPARAMETERS["max_steps"]

    # W&B, offline: the run is the job, with its params, every step's loss and the links at the end.
    run = read_run(live.data_dir, job.id)
    assert (run.project, run.name) == ("dpo-runs", "sdk-run")
    assert {"team-a", "alignd/finetune", f"alignd/{job.id}"} <= set(run.tags)
    assert run.config["hyperparameters.beta"] == 0.5
    assert run.config["model"] == MODEL
    assert {row["_step"]: row["loss"] for row in run.history if "loss" in row} == pytest.approx(losses)
    assert run.summary["fine_tuned_model"] == job.fine_tuned_model
    assert run.summary["adapter_url"] == f"{live.url}/v1/fine_tuning/jobs/{job.id}/artifacts/adapter"
    assert run.exit_code == 0

    # MLflow: read back through its own client.
    tracking = MlflowClient(mlflow_server.url)
    experiment = tracking.get_experiment_by_name("alignd-e2e")
    assert experiment is not None
    (found,) = tracking.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`alignd.job_id` = '{job.id}'"
    )
    assert found.info.status == "FINISHED"
    history = tracking.get_metric_history(found.info.run_id, "loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    assert found.data.params["hyperparameters.beta"] == "0.5"
    assert found.data.tags["team"] == "a"
    assert found.data.tags["mlflow.runName"] == job.id
    assert found.data.tags["alignd.fine_tuned_model"] == job.fine_tuned_model

    # The credentials went in and never came out: not in any answer, event, or the database in clear.
    answers = [
        set_mlflow.text,
        set_wandb.text,
        httpx.get(f"{live.url}/v1/integrations", headers=bearer(key)).text,
        json.dumps(job.model_dump()),
        json.dumps(_events(live, key, job.id)),
    ]
    database = (live.data_dir / "alignd.db").read_bytes()
    for secret in (MLFLOW_TOKEN, WANDB_KEY):
        assert not [a for a in answers if secret in a]
        assert secret.encode() not in database
    listed = httpx.get(f"{live.url}/v1/integrations", headers=bearer(key)).json()["data"]
    assert {(e["type"], e["configured"]) for e in listed} == {("wandb", True), ("mlflow", True)}


def test_unreachable_tracking_server_is_a_job_event(live: Server, tmp_path: Path) -> None:
    key = live.project_key("unreachable")
    nobody = f"http://127.0.0.1:{free_port()}"
    assert put_credentials(live, key, "mlflow", {"tracking_uri": nobody}).status_code == 200
    client = live.client(key)

    created = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=_training_file(client, tmp_path),
        integrations=[MLFLOW_ONLY],
        extra_body={
            "method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}},
            "alignd": OPTIONS,
        },
    )

    assert created.integrations is None  # OpenAI's list holds W&B entries only
    job = until(
        lambda: j if (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL else None,
        "the job finished",
        timeout=240,
    )
    assert job.status == "succeeded", job.error
    warning = until(
        lambda: next((e for e in _events(live, key, job.id) if (e["data"] or {}).get("integration")), None),
        "the integration's failure became an event",
    )
    assert warning["level"] == "warn"
    assert warning["message"].startswith("The MLflow integration stopped after 2 failed attempts")
    assert "could not connect to the MLflow tracking server" in warning["message"]
    assert nobody not in json.dumps(warning)
    assert _integration_runs(live, job.id) == [("mlflow", "failed")]
