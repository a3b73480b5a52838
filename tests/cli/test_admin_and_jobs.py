"""The CLI an operator and a user reach for: `alignd admin` lists projects and keys and revokes a key,
`alignd jobs pause|resume` stop a running job at a checkpoint and continue it; all through a live server."""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from alignd import cli
from alignd.cli import app
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key
from tests.trainer.conftest import rule_data

__all__ = ["rule_data"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fold long ids at the test runner's 80 columns; a real terminal is usually wider."""
    monkeypatch.setattr(cli.console, "width", 200)


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    settings = Settings(data_dir=tmp_path / "alignd", admin_key=ADMIN_KEY, controller_interval_seconds=0.2)
    with BackgroundServer(settings, "127.0.0.1", port) as server:
        yield server.url


def _cli(url: str, key: str, *args: str) -> str:
    result = runner.invoke(app, list(args), env={"ALIGND_API_URL": url, "ALIGND_API_KEY": key})
    assert result.exit_code == 0, result.output
    return result.output


def test_admin_lists_projects_and_keys_and_revokes_a_key(live_url: str) -> None:
    created = json.loads(_cli(live_url, ADMIN_KEY, "admin", "create-project", "cli-team"))
    key = json.loads(_cli(live_url, ADMIN_KEY, "admin", "create-key", created["id"], "--name", "ci"))
    assert httpx.get(f"{live_url}/v1/files", headers=bearer(key["value"])).status_code == 200

    assert "cli-team" in _cli(live_url, ADMIN_KEY, "admin", "projects")
    listed = _cli(live_url, ADMIN_KEY, "admin", "keys", created["id"])
    assert key["id"] in listed and key["value"] not in listed

    _cli(live_url, ADMIN_KEY, "admin", "revoke-key", key["id"])

    assert httpx.get(f"{live_url}/v1/files", headers=bearer(key["value"])).status_code == 401
    assert "yes" in _cli(live_url, ADMIN_KEY, "admin", "keys", created["id"])


def test_admin_lists_page_by_page_oldest_first_without_gaps_or_repeats(live_url: str) -> None:
    admin = bearer(ADMIN_KEY)
    made = [httpx.post(f"{live_url}/v1/admin/projects", json={"name": f"p{i}"}, headers=admin).json()["id"]
            for i in range(5)]  # fmt: skip
    seen: list[dict[str, object]] = []
    after = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"after": after} if after else {})
        page = httpx.get(f"{live_url}/v1/admin/projects", params=params, headers=admin).json()
        seen += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    ids = [project["id"] for project in seen]
    assert sorted(ids) == sorted(set(ids)) and set(made) <= set(ids)
    created = [project["created_at"] for project in seen]
    assert created == sorted(created)  # type: ignore[type-var]


def test_a_project_key_cannot_list_projects(live_url: str) -> None:
    """Admin routes look absent to project keys (404, as other projects' resources do)."""
    with httpx.Client(base_url=live_url) as api:
        key = new_project_key(api, "not-admin")
        refused = api.get("/v1/admin/projects", headers=bearer(key))
    assert refused.status_code == 404 and "data" not in refused.json()


@pytest.mark.slow
def test_pause_then_resume_a_running_job(
    live_url: str, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    with httpx.Client(base_url=live_url, timeout=60) as api:
        key = new_project_key(api, "pausers")
        api.headers.update(bearer(key))
        model = {"id": "tiny", "source": str(tiny_model_dir)}
        assert api.post("/v1/models", json=model, headers=bearer(ADMIN_KEY)).status_code == 200
        body = b"".join(rule_data[0].read_bytes().splitlines(keepends=True)[:200])
        file_id = api.post(
            "/v1/files", files={"file": ("t.jsonl", body)}, data={"purpose": "fine-tune"}
        ).json()["id"]
        # 100 epochs: minutes of training, so the run is still going when the pause arrives however late
        # the first metrics reach the server.
        hyperparameters = {"batch_size": 4, "n_epochs": 100, "max_steps": 100000}
        job_id = api.post("/v1/fine_tuning/jobs", json={
            "model": "tiny", "training_file": file_id,
            "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
            "alignd": {"resources": {"gpus": 0}},
        }).json()["id"]  # fmt: skip
        _wait(
            api, job_id, lambda job: bool(api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["train"])
        )

        assert json.loads(_cli(live_url, key, "jobs", "pause", job_id))["alignd"]["status"] == "pausing"
        _wait(api, job_id, lambda job: job["alignd"]["status"] == "paused")
        assert json.loads(_cli(live_url, key, "jobs", "resume", job_id))["alignd"]["status"] == "queued"

        _cli(live_url, key, "jobs", "cancel", job_id)
        _wait(api, job_id, lambda job: job["status"] == "cancelled")


def _wait(
    api: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> None:
    deadline = time.monotonic() + timeout
    while not done(job := api.get(f"/v1/fine_tuning/jobs/{job_id}").json()):
        events = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 20}).json()["data"]
        assert time.monotonic() < deadline, (job["alignd"]["status"], [e["message"] for e in events])
        time.sleep(0.5)
