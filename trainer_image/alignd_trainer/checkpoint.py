"""Checkpoints: written to a temporary directory, then renamed, so a half-written one never counts.

Layout of `{output_dir}/checkpoints/step-{n:08d}/`:
  adapter/ or model/   weights (safetensors)
  optimizer.pt         AdamW state
  scheduler.pt         LR scheduler state
  rng-rank{r}.pt       RNG states of each rank
  trainer_state.json   step, epoch, spec fingerprint, metrics
"""

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from alignd.contract import JobSpec
from alignd_trainer.errors import BadInputError

STATE_FILE = "trainer_state.json"


def fingerprint(spec: JobSpec) -> dict[str, Any]:
    """What must not change between a checkpoint and the run resuming from it (what is written after
    training, such as the merged weights, may)."""
    return spec.model_dump(
        mode="json",
        exclude={"job_id", "output_dir", "resources", "max_runtime_seconds", "merged_weights"},
    )


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"step-{step:08d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return None
    done = sorted(
        p
        for p in root.iterdir()
        if p.name.startswith("step-") and (p / STATE_FILE).exists() and not p.name.endswith(".tmp")
    )
    return done[-1] if done else None


def save_weights(model: nn.Module, directory: Path, tokenizer: Any = None) -> Path:
    """LoRA: adapter/ loadable by PeftModel.from_pretrained. Full: model/ loadable by from_pretrained."""
    if isinstance(model, PeftModel):
        target = directory / "adapter"
        model.save_pretrained(str(target), safe_serialization=True)
    else:
        target = directory / "model"
        model.save_pretrained(target, safe_serialization=True)  # type: ignore[operator]
        if tokenizer is not None:
            tokenizer.save_pretrained(target)
    return target


@dataclass(frozen=True)
class TrainingState:
    step: int
    epoch: int
    metrics: dict[str, float]
    fingerprint: dict[str, Any]


def save_checkpoint(
    *,
    output_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
    rng_states: list[dict[str, Any]],
) -> Path:
    final = step_dir(output_dir, state.step)
    if (final / STATE_FILE).exists():
        return final
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    for rank, rng in enumerate(rng_states):
        torch.save(rng, tmp / f"rng-rank{rank}.pt")
    state_json = {
        "step": state.step,
        "epoch": state.epoch,
        "metrics": state.metrics,
        "fingerprint": state.fingerprint,
    }
    (tmp / STATE_FILE).write_text(json.dumps(state_json, indent=2))
    tmp.rename(final)
    return final


def read_state(directory: Path, spec: JobSpec) -> TrainingState:
    raw = json.loads((directory / STATE_FILE).read_text())
    expected = fingerprint(spec)
    changed = sorted(
        k for k in set(expected) | set(raw["fingerprint"]) if expected.get(k) != raw["fingerprint"].get(k)
    )
    if changed:
        raise BadInputError(
            f"checkpoint {directory} was made with a different job spec ({', '.join(changed)} "
            "differ); resume with the same spec or start in a new output_dir"
        )
    return TrainingState(raw["step"], raw["epoch"], raw["metrics"], raw["fingerprint"])


def load_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int,
) -> None:
    device = next(model.parameters()).device
    if isinstance(model, PeftModel):
        weights = load_file(directory / "adapter" / "adapter_model.safetensors", device=str(device))
        set_peft_model_state_dict(model, weights)
    else:
        dtype = next(model.parameters()).dtype
        loaded = type(model).from_pretrained(directory / "model", dtype=dtype)  # type: ignore[attr-defined]
        model.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    rng_file = directory / f"rng-rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
