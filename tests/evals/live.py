"""A live alignd server for eval runs: uvicorn on loopback with its controller and a launcher, driven
through the openai SDK; the test reads the run rows (attempts) from the server's own database.

The judge endpoint of `score_model` graders is the server's own `/v1` with a project key. A key exists
only once the server runs, so `judged_server` starts it once to make the project and register the
models, then again with the judge settings (the data directory, and so the database, is the same).
"""

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
from pydantic import SecretStr
from sqlmodel import col, select

from alignd.config import Settings
from alignd.db import make_engine, session_factory
from alignd.jobs.lifecycle import RunKind
from alignd.models import RunModel
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, bearer

T = TypeVar("T")
TERMINAL = {"completed", "failed", "canceled"}


@dataclass
class Live:
    url: str
    settings: Settings
    key: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url, api_key=self.key, max_retries=0, _strict_response_validation=True
        )

    def attempts(self, run_id: str) -> list[RunModel]:
        engine = make_engine(self.settings.resolved_database_url())
        try:
            with session_factory(engine)() as session:
                return list(
                    session.exec(
                        select(RunModel)
                        .where(col(RunModel.kind) == RunKind.evaluate, col(RunModel.eval_run_id) == run_id)
                        .order_by(col(RunModel.attempt))
                    )
                )
        finally:
            engine.dispose()

    def upload(self, rows: list[dict[str, Any]], purpose: str = "fine-tune") -> str:
        body = "".join(json.dumps(row) + "\n" for row in rows).encode()
        response = httpx.post(
            f"{self.base_url}/files",
            files={"file": ("items.jsonl", body)},
            data={"purpose": purpose},
            headers=bearer(self.key),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


def admin(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(url + path, json=body, headers=bearer(ADMIN_KEY), timeout=60)
    assert response.is_success, response.text
    data: dict[str, Any] = response.json()
    return data


def settings_for(data_dir: Path, port: int, **overrides: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        public_url=f"http://127.0.0.1:{port}",
        controller_interval_seconds=0.2,
        **overrides,
    )


@contextlib.contextmanager
def judged_server(data_dir: Path, models: dict[str, Path], **overrides: Any) -> Iterator[Live]:
    """A server with its controller, `models` registered, a project key, and its own `/v1` as the judge."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with BackgroundServer(settings_for(data_dir, port, run_controller=False), "127.0.0.1", port):
        for model_id, source in models.items():
            admin(url, "/v1/models", {"id": model_id, "source": str(source)})
        project = admin(url, "/v1/admin/projects", {"name": "evals"})
        key = str(admin(url, f"/v1/admin/projects/{project['id']}/api_keys", {"name": "evals"})["value"])
    settings = settings_for(
        data_dir,
        port,
        eval_judge_base_url=f"{url}/v1",
        eval_judge_api_key=SecretStr(key),
        eval_batch_size=4,
        **overrides,
    )
    try:
        with BackgroundServer(settings, "127.0.0.1", port):
            yield Live(url=url, settings=settings, key=key)
    finally:
        kill_runs(data_dir)


def kill_runs(data_dir: Path) -> None:
    """Runs a test left behind (the server is down, so no controller will stop them)."""
    for run in data_dir.glob("runs/*/run.json"):
        pid = int(json.loads(run.read_text())["pid"])
        with contextlib.suppress(OSError):
            if f"ALIGND_JOB_ID={run.parent.name}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                os.killpg(pid, signal.SIGKILL)


def until(condition: Callable[[], T | None], what: str, *, timeout: float = 300, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(every)
    return result
