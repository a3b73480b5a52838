"""Integration credentials and job integrations through the API: set, listed as set, never shown;
jobs asking for an integration the project cannot run are refused, naming the entry."""

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from alignd.config import Settings
from alignd.db import make_engine
from tests.api.helpers import bearer, new_project_key, register_model, upload_rows

WANDB: dict[str, object] = {
    "type": "wandb",
    "wandb": {"project": "dpo", "entity": "team", "name": None, "tags": ["a"]},
}
KEY = "wandb-secret-value-0123456789"


def _job(client: TestClient, key: str, model: str, integrations: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    body = {
        "model": model,
        "training_file": upload_rows(client, key),
        "integrations": integrations,
    }
    return client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key))


def test_credentials_are_set_listed_and_deleted_but_never_shown(
    client: TestClient, key: str, settings: Settings
) -> None:
    put = client.put("/v1/integrations/wandb", json={"api_key": KEY}, headers=bearer(key))
    listed = client.get("/v1/integrations", headers=bearer(key))

    assert put.status_code == 200, put.text
    assert put.json()["type"] == "wandb" and put.json()["configured"] is True
    assert {(e["type"], e["configured"]) for e in listed.json()["data"]} == {
        ("wandb", True),
        ("mlflow", False),
    }
    assert KEY not in put.text + listed.text
    other = new_project_key(client, "team-b")
    others = client.get("/v1/integrations", headers=bearer(other)).json()["data"]
    assert not [e for e in others if e["configured"]]
    engine = make_engine(settings.resolved_database_url())
    with engine.connect() as connection:
        sealed = connection.execute(text("SELECT sealed FROM integration_credentials")).scalar_one()
    engine.dispose()
    assert sealed.startswith("enc:v1:") and KEY not in sealed

    assert client.delete("/v1/integrations/wandb", headers=bearer(key)).json()["configured"] is False
    again = client.delete("/v1/integrations/wandb", headers=bearer(key))
    assert again.status_code == 404, again.text


def test_a_tracking_server_on_an_internal_address_needs_the_admin(client: TestClient, key: str) -> None:
    response = client.put(
        "/v1/integrations/mlflow", json={"tracking_uri": "http://127.0.0.1:5000"}, headers=bearer(key)
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("tracking_uri", "forbidden_url")
    assert "ALIGND_MLFLOW_ALLOWED_HOSTS" in error["message"]


def test_job_echoes_its_wandb_integration_as_openai_does(
    client: TestClient, key: str, tmp_path: Path
) -> None:
    client.put("/v1/integrations/wandb", json={"api_key": KEY}, headers=bearer(key))

    response = _job(client, key, register_model(client, tmp_path), [WANDB])

    assert response.status_code == 200, response.text
    job = response.json()
    assert job["integrations"] == [WANDB]
    assert job["alignd"]["integrations"] == [WANDB]
    fetched = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=bearer(key)).json()
    assert fetched["integrations"] == [WANDB]


def test_job_refuses_an_integration_the_project_has_not_set_up(
    client: TestClient, key: str, tmp_path: Path
) -> None:
    mlflow: dict[str, object] = {"type": "mlflow", "mlflow": {"experiment_name": "dpo"}}
    model = register_model(client, tmp_path)
    client.put("/v1/integrations/wandb", json={"api_key": KEY}, headers=bearer(key))
    missing = _job(client, key, model, [mlflow])
    twice = _job(client, key, model, [WANDB, WANDB])
    unknown = _job(client, key, model, [{"type": "comet", "comet": {}}])

    assert missing.status_code == 400, missing.text
    assert missing.json()["error"]["param"] == "integrations[0]"
    assert "PUT /v1/integrations/mlflow" in missing.json()["error"]["message"]
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "integrations[1]", twice.text
    assert unknown.status_code == 400, unknown.text
    assert client.get("/v1/fine_tuning/jobs", headers=bearer(key)).json()["data"] == []
