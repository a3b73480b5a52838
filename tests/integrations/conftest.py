"""Integrations through real parts: a live alignd server (local launcher, tiny model) writing W&B runs in
offline mode under its data directory, and an MLflow tracking server (`mlflow server`, SQLite backend) on
loopback, read back with MLflow's own client."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from tests.api.helpers import ADMIN_KEY, bearer
from tests.sdk.conftest import Server, _kill_trainers

MODEL = "tiny-integrations"


@dataclass
class Tracking:
    url: str


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """`mlflow server` with a SQLite backend, answering on loopback."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield Tracking(url)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    """A server whose W&B runs are offline, that may reach loopback tracking servers, and that gives up
    on an integration after two quick attempts."""
    data_dir = tmp_path_factory.mktemp("integrations-live")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=data_dir,
        admin_key=ADMIN_KEY,
        public_url=url,
        controller_interval_seconds=0.2,
        integrations_poll_seconds=0.2,
        integrations_backoff_seconds=0.2,
        integrations_max_attempts=2,
        integrations_timeout_seconds=5,
        wandb_mode="offline",
        mlflow_allowed_hosts=["127.0.0.1"],
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        try:
            with BackgroundServer(settings, "127.0.0.1", port):
                server = Server(url=url, data_dir=data_dir)
                server.admin("POST", "/v1/models", {"id": MODEL, "source": str(tiny_model_dir)})
                yield server
        finally:
            _kill_trainers(data_dir)


def put_credentials(server: Server, key: str, type: str, body: dict[str, str]) -> httpx.Response:
    return httpx.put(f"{server.url}/v1/integrations/{type}", json=body, headers=bearer(key), timeout=30)
