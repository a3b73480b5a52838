"""`alignd demo`: the whole loop on one machine, offline, in about a minute on a laptop CPU.

Starts the server with embedded defaults, builds a tiny base model (unless --model names one),
uploads synthetic preference data with a held-out split, runs a LoRA DPO job with live progress,
downloads the adapter, loads it with peft and prints held-out preference accuracy before/after.
"""

import io
import json
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import transformers
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from alignd.client import Client
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from alignd_trainer.score import score_file
from alignd_trainer.synthetic import preference_rows, write_jsonl
from alignd_trainer.tiny_model import build_tiny_model

TRAIN_ROWS, HELDOUT_ROWS, BATCH, EPOCHS = 2000, 64, 16, 4
HYPERPARAMETERS = {
    "beta": 0.5,
    "batch_size": BATCH,
    "n_epochs": EPOCHS,
    "learning_rate": 2e-3,
    "eval_steps": 100,
    "save_steps": 250,
    "warmup_ratio": 0.05,
}


@dataclass(frozen=True)
class DemoResult:
    job_id: str
    accuracy_before: float
    accuracy_after: float
    adapter_dir: Path


def run_demo(*, data_dir: Path, model: str | None, console: Console) -> DemoResult:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    port, admin_key = free_port(), f"sk-alignd-admin-{secrets.token_urlsafe(16)}"
    settings = Settings(data_dir=data_dir, admin_key=admin_key, controller_interval_seconds=0.5)
    work = data_dir / "demo"
    work.mkdir(parents=True, exist_ok=True)
    with BackgroundServer(settings, "127.0.0.1", port) as server:
        console.print(f"[bold]alignd[/] API on {server.url} (data in {data_dir})")
        client = _project_client(server.url, admin_key)
        base = model or str(build_tiny_model(work / "tiny-model"))
        console.print(
            f"base model: {base}" + ("" if model else " (tiny, random init, tokenizer trained now)")
        )
        _register(server.url, admin_key, base)
        train = write_jsonl(work / "train.jsonl", preference_rows(TRAIN_ROWS, seed=1))
        heldout = write_jsonl(work / "heldout.jsonl", preference_rows(HELDOUT_ROWS, seed=2))
        train_id, heldout_id = client.upload(train)["id"], client.upload(heldout)["id"]
        before = _accuracy(base, heldout, work / "before.jsonl", ref=None)
        job = client.call("POST", "/v1/fine_tuning/jobs", json={
            "model": "demo-base", "training_file": train_id, "validation_file": heldout_id, "suffix": "demo",
            "method": {"type": "dpo", "dpo": {"hyperparameters": HYPERPARAMETERS}},
            "alignd": {"lora": {"r": 8, "alpha": 16}, "resources": {"gpus": 0}},
        })  # fmt: skip
        console.print(f"job {job['id']} created: LoRA DPO, {EPOCHS} epochs of {TRAIN_ROWS} pairs")
        final = _watch(client, job["id"], EPOCHS * (TRAIN_ROWS // BATCH), console)
        if final["status"] != "succeeded":
            raise RuntimeError(f"job ended {final['status']}: {final['error']}")
        adapter = _download(client, job["id"], work)
    after = _accuracy(str(adapter), heldout, work / "after.jsonl", ref=base)
    return DemoResult(job["id"], before, after, adapter)


def _project_client(url: str, admin_key: str) -> Client:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)
    project = admin.post("/v1/admin/projects", json={"name": f"demo-{secrets.token_hex(3)}"}).json()
    key = admin.post(f"/v1/admin/projects/{project['id']}/api_keys", json={"name": "demo"}).json()
    return Client(url, key["value"])


def _register(url: str, admin_key: str, source: str) -> None:
    response = httpx.post(
        f"{url}/v1/models",
        json={"id": "demo-base", "source": source},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=60,
    )
    if response.status_code not in (200, 409):
        raise RuntimeError(f"registering the base model failed: {response.text}")


def _watch(client: Client, job_id: str, total: int, console: Console) -> dict[str, object]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=total, stats="")
        for job, points in client.follow_metrics(job_id):
            if points:
                last = points[-1]["values"]
                stats = f"loss {last['loss']:.3f}  margin {last['rewards/margins']:+.3f}"
                progress.update(task, completed=points[-1]["step"], stats=stats)
            progress.update(task, description=f"training ({job['alignd']['status']})")
    return job


def _download(client: Client, job_id: str, work: Path) -> Path:
    archive = client.download_adapter(job_id, work / f"{job_id}-adapter.tar.gz")
    target = work / job_id
    with tarfile.open(archive, mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    return target / "adapter"


def _accuracy(model: str, data: Path, out: Path, *, ref: str | None) -> float:
    """Held-out preference accuracy: before, the base prefers chosen; after, the reward margin is positive."""
    buffer = io.StringIO()
    score_file(model_dir=model, data=str(data), out=buffer, ref_dir=ref)
    out.write_text(buffer.getvalue())
    rows = [json.loads(line) for line in buffer.getvalue().splitlines()]
    wins = [r["reward_margin"] > 0 if ref else r["chosen_logps"] > r["rejected_logps"] for r in rows]
    return sum(wins) / len(wins)


def summary_table(result: DemoResult) -> Table:
    table = Table(title="held-out preference accuracy")
    table.add_column("before")
    table.add_column("after")
    table.add_row(f"{result.accuracy_before:.1%}", f"{result.accuracy_after:.1%}")
    return table
