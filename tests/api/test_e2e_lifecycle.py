"""A job's life beyond the happy path, end to end: live API servers (uvicorn on loopback) with their
controller, the local launcher and the real trainer on the tiny model. Pause, then resume from the
checkpoint taken at the pause; an API server restart mid-job (the run survives and is found again;
a run killed while no server was up is not left running); a trainer that falls silent past the
heartbeat deadline fails its job."""

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from alignd.app import create_app
from alignd.config import Settings
from alignd.server import free_port
from tests.api.helpers import (
    ADMIN_KEY,
    TERMINAL,
    bearer,
    new_project_key,
    proc_state,
    upload_lines,
    wait_status,
)

pytestmark = pytest.mark.slow

STEPS = 120
PAUSABLE: dict[str, Any] = {
    "rows": 2000, "batch_size": 32, "n_epochs": 2, "max_steps": STEPS, "save_steps": 100000,
}  # fmt: skip
"""A few seconds of training on a CPU, and no checkpoint but the one the pause takes."""
LONG: dict[str, Any] = {"rows": 2000, "n_epochs": 100, "max_steps": 100000}
"""25,000 steps: minutes of training, far longer than any test waits."""


class LiveServer:
    """One API server with its controller, in a thread; stop() is uvicorn's clean shutdown."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the API server did not stop"


class Deployment:
    """API servers on one data directory, one after another, sharing one project and API key.

    At the end the servers stop first (so no controller relaunches a run behind our back), then
    every trainer started under the data directory is killed with its process group.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.servers: list[LiveServer] = []
        self.clients: list[httpx.Client] = []
        self.pids: set[int] = set()
        self.key: str | None = None

    def serve(self, **settings: Any) -> tuple[LiveServer, httpx.Client]:
        """A new server on a port no earlier one used, and a client holding the project's key."""
        used = {server.settings.public_url for server in self.servers}
        while (url := f"http://127.0.0.1:{(port := free_port())}") in used:
            pass
        server = LiveServer(
            Settings(
                data_dir=self.data_dir,
                admin_key=ADMIN_KEY,
                public_url=url,
                controller_interval_seconds=0.2,
                **settings,
            ),
            port,
        )
        self.servers.append(server)
        client = httpx.Client(base_url=url, timeout=60)
        self.clients.append(client)
        self.key = self.key or new_project_key(client, "e2e")
        client.headers.update(bearer(self.key))
        return server, client

    def run_dir(self, job_id: str) -> Path:
        return self.data_dir / "runs" / job_id

    def trainer_pid(self, job_id: str) -> int:
        """The pid of the job's current run (each attempt rewrites run.json)."""
        pid = int(json.loads((self.run_dir(job_id) / "run.json").read_text())["pid"])
        self.pids.add(pid)
        return pid

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in self.servers:
            if server.thread.is_alive():
                server.stop()
        for run in self.data_dir.glob("runs/*/run.json"):
            self.trainer_pid(run.parent.name)
        for pid in self.pids:
            if _is_trainer(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # stopped processes too


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    # Trainers inherit the environment: one OpenMP thread is faster on the tiny model, and does not
    # collapse when other processes share the CPUs (see torch_one_thread in tests/conftest.py).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    deployment = Deployment(tmp_path / "alignd")
    try:
        yield deployment
    finally:
        deployment.close()


def _is_trainer(pid: int) -> bool:
    """Alive (not a zombie) and an alignd trainer: the pid was not reused since."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"ALIGND_JOB_ID=" in environ and "zombie" not in proc_state(pid)


def _create_job(
    api: httpx.Client, model_dir: Path, data: Path, *, rows: int = 400, **hyperparameters: Any
) -> str:
    tiny = {"id": "tiny", "source": str(model_dir)}
    registered = api.post("/v1/models", json=tiny, headers=bearer(ADMIN_KEY))
    assert registered.status_code in (200, 409), registered.text  # 409: registered by an earlier job
    created = api.post("/v1/fine_tuning/jobs", json={
        "model": "tiny", "training_file": upload_lines(api, data, rows),
        "method": {"type": "dpo", "dpo": {"hyperparameters": {
            "batch_size": 8, "learning_rate": 2e-3, "beta": 0.5, **hyperparameters,
        }}},
        "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}},
    })  # fmt: skip
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def _until(condition: Callable[[], Any], what: str, *, timeout: float = 60, every: float = 0.2) -> Any:
    """Poll `condition` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(every)
    return result


def _train_steps(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = api.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["train"]
    return points


def _logged_train_steps(log: Path) -> int:
    """Train steps in the run's log: the trainer prints each at once, while its reports to the API
    go out only every 2 s."""
    steps = 0
    with contextlib.suppress(FileNotFoundError):
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                payload = json.loads(line)
                steps += payload.get("kind") == "metrics" and payload.get("split") == "train"
    return steps


def _events(api: httpx.Client, job_id: str) -> list[str]:
    """Every event message, oldest first."""
    messages: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"after": after} if after else {})
        page = api.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
        messages += [e["message"] for e in page["data"]]
        if not page["has_more"]:
            return messages[::-1]
        after = page["last_id"]


def _running_with_a_step(api: httpx.Client, job_id: str) -> None:
    wait_status(api, job_id, {"running"}, timeout=60)
    _until(lambda: _train_steps(api, job_id), "the trainer reported a step")


def test_pause_then_resume_continues_from_the_checkpoint(
    deployment: Deployment, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    _, api = deployment.serve()
    job_id = _create_job(api, tiny_model_dir, rule_data[0], **PAUSABLE)
    wait_status(api, job_id, {"running"}, timeout=60)
    log = deployment.run_dir(job_id) / "trainer.log"
    _until(lambda: _logged_train_steps(log) >= 3, "the trainer trained 3 steps", every=0.05)

    paused = api.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["status"], paused.json()["alignd"]["status"]) == ("running", "pausing")
    job = wait_status(api, job_id, {"paused", *TERMINAL}, timeout=60)
    assert (job["status"], job["alignd"]["status"]) == ("queued", "paused"), _events(api, job_id)
    checkpoints = api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert len(checkpoints) == 1, checkpoints
    paused_at = checkpoints[0]["step_number"]
    assert 3 <= paused_at < STEPS
    saved = deployment.run_dir(job_id) / f"output/checkpoints/step-{paused_at:08d}"
    assert (saved / "trainer_state.json").exists(), "the checkpoint the resumed run starts from"
    before = _train_steps(api, job_id)
    assert [p["step"] for p in before] == list(range(1, paused_at + 1)), "the checkpoint has every step"

    resumed = api.post(f"/v1/fine_tuning/jobs/{job_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["alignd"]["status"] == "queued"
    job = wait_status(api, job_id, TERMINAL, timeout=90)
    assert job["status"] == "succeeded", _events(api, job_id)
    assert job["alignd"]["attempt"] == 2

    # The resumed run's points: all points now, less those reported before the pause.
    after = Counter(json.dumps(p, sort_keys=True) for p in _train_steps(api, job_id))
    after.subtract(json.dumps(p, sort_keys=True) for p in before)
    resumed_steps = sorted(json.loads(p)["step"] for p in after.elements())
    assert resumed_steps == list(range(paused_at + 1, STEPS + 1))
    events = _events(api, job_id)
    assert "Job paused; resume continues from the last checkpoint" in events
    assert f"resumed from checkpoint at step {paused_at}" in events
    assert events[-1] == "The job has successfully completed"


def test_server_restart_mid_job_is_reconciled(
    deployment: Deployment, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    # A run outlives the server that started it; the next server finds it and can cancel it.
    first, api = deployment.serve()
    job_id = _create_job(api, tiny_model_dir, rule_data[0], **LONG)
    _running_with_a_step(api, job_id)
    pid = deployment.trainer_pid(job_id)
    first.stop()
    assert _is_trainer(pid), "the run died with the API server"

    # The run still reports to the first server's dead URL; SIGKILL follows SIGTERM after 2 s.
    second, api = deployment.serve(cancel_grace_seconds=2)
    passes = time.monotonic() + 5 * second.settings.controller_interval_seconds
    while time.monotonic() < passes:
        job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        assert (job["alignd"]["status"], job["alignd"]["attempt"]) == ("running", 1), _events(api, job_id)
        assert _is_trainer(pid), "the new server's controller stopped a live run"
        time.sleep(0.2)
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    _until(lambda: not _is_trainer(pid), "the cancelled run ended", timeout=30)

    # A run killed while no server was up is noticed: retried or failed, never left running.
    job_id = _create_job(api, tiny_model_dir, rule_data[0], **LONG)
    _running_with_a_step(api, job_id)
    pid = deployment.trainer_pid(job_id)
    second.stop()
    os.killpg(pid, signal.SIGKILL)
    _until(lambda: not _is_trainer(pid), "the killed run ended", timeout=10)

    _, api = deployment.serve(cancel_grace_seconds=2)

    def moved_on() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        return job if job["alignd"]["status"] != "running" or job["alignd"]["attempt"] > 1 else None

    job = _until(moved_on, "the controller noticed the run was gone", timeout=30)
    events = _events(api, job_id)
    if job["alignd"]["status"] == "failed":
        assert job["error"] and job["error"]["message"], job
    else:
        assert any(m.startswith("Run ended (Lost") and "retrying" in m for m in events), events
    assert api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_trainer_silent_past_heartbeat_deadline_fails_the_job(
    deployment: Deployment, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    server, api = deployment.serve(cancel_grace_seconds=1)
    job_id = _create_job(api, tiny_model_dir, rule_data[0], **LONG)
    _running_with_a_step(api, job_id)
    # Tightened only now that the run reports: a slow start (seconds of imports on a busy machine
    # before the first report) must not trip it. The controller reads its settings on every pass.
    server.settings.heartbeat_timeout_seconds = 5
    pid = deployment.trainer_pid(job_id)
    assert api.get(f"/v1/fine_tuning/jobs/{job_id}").json()["alignd"]["status"] == "running"
    os.killpg(pid, signal.SIGSTOP)  # alive, but silent: no more reports nor heartbeats

    job = wait_status(api, job_id, TERMINAL, timeout=30)
    assert job["status"] == "failed", _events(api, job_id)
    assert job["error"]["code"] == "trainer_silent", job["error"]
    assert "(heartbeat deadline 5s)" in job["error"]["message"]
    _until(lambda: not _is_trainer(pid), "the silent run was killed", timeout=30)


def test_pause_right_after_launch_pauses_the_job(
    deployment: Deployment, tiny_model_dir: Path, rule_data: tuple[Path, Path]
) -> None:
    _, api = deployment.serve()
    job_id = _create_job(api, tiny_model_dir, rule_data[0], **LONG)
    wait_status(api, job_id, {"running"}, timeout=60)
    paused = api.post(f"/v1/fine_tuning/jobs/{job_id}/pause")
    assert paused.status_code == 200, paused.text

    job = wait_status(api, job_id, {"paused", *TERMINAL}, timeout=60)
    assert job["alignd"]["status"] == "paused", (job["error"], _events(api, job_id))
