"""`alignd jobs create --method supervised` creates an SFT job through a live server (without a
controller, so it stays queued and costs no CPU); a DPO job on that chat file is refused, naming it."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from alignd.cli import app
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from alignd_trainer.synthetic import chat_rows
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key

runner = CliRunner()


@pytest.fixture
def idle_url(tmp_path: Path) -> Iterator[str]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # registration checks the directory; nothing trains
    port = free_port()
    settings = Settings(data_dir=tmp_path / "alignd", admin_key=ADMIN_KEY, run_controller=False)
    with BackgroundServer(settings, "127.0.0.1", port) as server:
        added = httpx.post(
            f"{server.url}/v1/models", json={"id": "m", "source": str(model_dir)}, headers=bearer(ADMIN_KEY)
        )
        assert added.is_success, added.text
        yield server.url


def test_jobs_create_takes_the_method(idle_url: str) -> None:
    with httpx.Client(base_url=idle_url, timeout=30) as api:
        key = new_project_key(api, "cli-sft")
        data = "".join(json.dumps(row) + "\n" for row in chat_rows(8, seed=1))
        file = api.post(
            "/v1/files",
            files={"file": ("chat.jsonl", data)},
            data={"purpose": "fine-tune"},
            headers=bearer(key),
        )
        assert file.is_success, file.text
    env = {"ALIGND_API_URL": idle_url, "ALIGND_API_KEY": key}
    args = ["jobs", "create", "m", file.json()["id"], "--hyperparameters", '{"n_epochs": 2}']
    created = runner.invoke(app, [*args, "--method", "supervised"], env=env)
    assert created.exit_code == 0, created.output
    job = json.loads(created.output)
    assert job["method"]["type"] == "supervised" and job["hyperparameters"]["n_epochs"] == 2
    assert job["alignd"]["spec"]["method"] == "supervised"
    refused = runner.invoke(app, args, env=env)
    assert refused.exit_code != 0 and file.json()["id"] in refused.output
