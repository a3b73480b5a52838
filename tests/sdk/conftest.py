"""The official `openai` SDK against running alignd servers (uvicorn on loopback, embedded defaults in a
temporary data directory, a tiny local base model registered through the admin API).

Two servers per session:
- `live`: with its controller, the local launcher and the real trainer. It trains one job end to end
  (`trained_job`, shared by every test that reads a finished job) and the async client's pause/resume.
- `idle`: without a controller, so jobs stay queued and cost no CPU: listing, metadata filters, cancel,
  errors and quotas.

Tests reach the API only through the SDK; the admin calls that set up projects and models are not part
of OpenAI's API and use httpx.
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
import pytest
from openai.types.fine_tuning import FineTuningJob

from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from alignd_trainer.synthetic import preference_rows
from tests.api.helpers import ADMIN_KEY, bearer

T = TypeVar("T")
TERMINAL = {"succeeded", "failed", "cancelled"}
MODEL = "tiny-sdk"


@dataclass
class Server:
    url: str
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def admin(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.request(method, self.url + path, json=body, headers=bearer(ADMIN_KEY), timeout=60)
        assert response.is_success, response.text
        data: dict[str, Any] = response.json()
        return data

    def project_key(self, name: str, **quotas: int) -> str:
        """A new project (with these quotas) and an API key for it."""
        project = self.admin("POST", "/v1/admin/projects", {"name": name, **quotas})
        key = self.admin("POST", f"/v1/admin/projects/{project['id']}/api_keys", {"name": "sdk"})
        return str(key["value"])

    def client(self, key: str, *, strict: bool = True) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url, api_key=key, max_retries=0, _strict_response_validation=strict
        )

    def async_client(self, key: str, *, strict: bool = True) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=key, max_retries=0, _strict_response_validation=strict
        )


def _serve(data_dir: Path, tiny_model_dir: Path, **settings: Any) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = Settings(data_dir=data_dir, admin_key=ADMIN_KEY, public_url=url, **settings)
    try:
        with BackgroundServer(config, "127.0.0.1", port):
            server = Server(url=url, data_dir=data_dir)
            server.admin("POST", "/v1/models", {"id": MODEL, "source": str(tiny_model_dir)})
            yield server
    finally:
        _kill_trainers(data_dir)


def _kill_trainers(data_dir: Path) -> None:
    """Runs a test left behind (the server is down, so no controller will stop them)."""
    for run in data_dir.glob("runs/*/run.json"):
        pid = int(json.loads(run.read_text())["pid"])
        with contextlib.suppress(OSError):
            if f"ALIGND_JOB_ID={run.parent.name}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                os.killpg(pid, signal.SIGKILL)


def _serve_live(data_dir: Path, tiny_model_dir: Path, **settings: Any) -> Iterator[Server]:
    """A server with its controller, running real trainers. Trainers inherit the environment: one OpenMP
    thread is faster on the tiny model and does not collapse when other processes share the CPUs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        yield from _serve(data_dir, tiny_model_dir, controller_interval_seconds=0.2, **settings)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    yield from _serve_live(tmp_path_factory.mktemp("sdk-live"), tiny_model_dir)


@pytest.fixture(scope="session")
def flex_attention(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    """A live server whose admin asked every trainer for FlexAttention (`ALIGND_TRAINER_ATTENTION`)."""
    yield from _serve_live(tmp_path_factory.mktemp("sdk-flex"), tiny_model_dir, trainer_attention="flex")


@pytest.fixture(scope="session")
def idle(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("sdk-idle"), tiny_model_dir, run_controller=False)


@pytest.fixture(scope="session")
def openai_rows() -> list[dict[str, Any]]:
    return preference_rows(2000, seed=11, fmt="openai")


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.fixture(scope="session")
def preference_file(tmp_path_factory: pytest.TempPathFactory, openai_rows: list[dict[str, Any]]) -> Path:
    """OpenAI's preference format: input.messages, preferred_output, non_preferred_output."""
    path = tmp_path_factory.mktemp("sdk-data") / "preferences.jsonl"
    path.write_bytes(jsonl(openai_rows))
    return path


def until(condition: Callable[[], T | None], what: str, *, timeout: float = 120, every: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(every)
    return result


def alignd_status(job: FineTuningJob) -> str:
    """alignd's own status (OpenAI's six plus pausing and paused), from the `alignd` extension object."""
    extension = job.model_extra or {}
    return str(extension["alignd"]["status"])


TRAINING: dict[str, Any] = {
    "beta": 0.5,
    "batch_size": 16,
    "n_epochs": 2,
    # alignd's extensions in the same hyperparameters object:
    "learning_rate": 2e-3,
    "max_steps": 200,
    "save_steps": 100000,
    "loss_type": "sigmoid",
}
"""A few seconds of CPU training (about 10 steps/s on two busy cores), long enough that a pause sent when
the first metrics arrive (the trainer reports every 2 s) lands while it runs."""
ALIGND_OPTIONS: dict[str, Any] = {
    "training_type": "lora",
    "lora": {"r": 4, "alpha": 8},
    "resources": {"gpus": 0},
}


@dataclass
class TrainedJob:
    """One job taken through its whole life by the synchronous client (strict validation)."""

    key: str
    job: FineTuningJob
    training_file: str
    seen: list[tuple[str, str]]
    """(OpenAI status, alignd status) pairs as the client saw them, in order, without repeats."""
    paused_at_step: int


@pytest.fixture(scope="session")
def trained_job(live: Server, preference_file: Path) -> TrainedJob:
    """Upload, create with extensions, poll to running, pause, resume, poll to succeeded."""
    key = live.project_key("sdk-trained")
    client = live.client(key)
    training = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    # As README.md's migration section shows it: with extensions, `method` travels in extra_body.
    created = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        suffix="sdk",
        seed=7,
        metadata={"suite": "sdk", "run": "lifecycle"},
        extra_body={
            "method": {"type": "dpo", "dpo": {"hyperparameters": TRAINING}},
            "alignd": ALIGND_OPTIONS,
        },
    )
    seen: list[tuple[str, str]] = []

    def observe() -> FineTuningJob:
        job = client.fine_tuning.jobs.retrieve(created.id)
        if not seen or seen[-1] != (job.status, alignd_status(job)):
            seen.append((job.status, alignd_status(job)))
        return job

    def stepped() -> bool:
        if observe().status in TERMINAL:
            return True
        return any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(created.id, limit=5).data)

    until(stepped, "the trainer reported a step")
    assert seen[-1][0] == "running", f"the run ended before it could be paused: {seen}"
    paused = client.fine_tuning.jobs.pause(created.id)
    assert (paused.status, alignd_status(paused)) == ("running", "pausing"), seen
    until(lambda: alignd_status(observe()) in {"paused", *TERMINAL}, "the job paused")
    checkpoints = client.fine_tuning.jobs.checkpoints.list(created.id).data
    assert len(checkpoints) == 1, checkpoints
    resumed = client.fine_tuning.jobs.resume(created.id)
    assert alignd_status(resumed) == "queued"
    job = until(lambda: _finished(observe()), "the job finished", timeout=240)
    return TrainedJob(
        key=key, job=job, training_file=training.id, seen=seen, paused_at_step=checkpoints[0].step_number
    )


def _finished(job: FineTuningJob) -> FineTuningJob | None:
    return job if job.status in TERMINAL else None
