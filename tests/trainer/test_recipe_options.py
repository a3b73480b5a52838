"""Options that must change the cost of a step but not its result, and options that change the loss."""

import math
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.harness import run_trainer, write_spec

pytestmark = pytest.mark.slow


def _losses(spec: dict[str, Any], tmp_path: Path, name: str, **hyper: Any) -> list[float]:
    spec = spec | {"output_dir": str(tmp_path / name)}
    spec["hyperparameters"] = spec["hyperparameters"] | {"max_steps": 4, "learning_rate": 1e-3} | hyper
    run = run_trainer(["--spec", str(write_spec(tmp_path / f"{name}.json", spec))])
    assert run.returncode == 0, run.stderr
    return [m["values"]["loss"] for m in run.metrics("train")]


@pytest.mark.parametrize("training_type", ["lora", "full"])
def test_gradient_accumulation_and_checkpointing_keep_the_numbers(
    small_spec: dict[str, Any], tmp_path: Path, training_type: str
) -> None:
    spec = small_spec | {"training_type": training_type}
    plain = _losses(spec, tmp_path, "plain")
    accumulated = _losses(spec, tmp_path, "accumulated", gradient_accumulation_steps=4)
    checkpointed = _losses(spec, tmp_path, "checkpointed", gradient_checkpointing=True)
    assert accumulated == pytest.approx(plain, abs=1e-5)
    assert checkpointed == pytest.approx(plain, abs=1e-5)
    assert plain[-1] != plain[0], "the model moved"


def test_weighted_loss_list(small_spec: dict[str, Any], tmp_path: Path) -> None:
    """sigmoid + 0.5·sft: at step 1 the DPO part is ln 2 and the SFT part the chosen NLL per token."""
    spec = small_spec | {"validation_file": small_spec["training_file"]}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {
        "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5], "max_steps": 1,
    }  # fmt: skip
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])
    assert run.returncode == 0, run.stderr
    first = run.metrics("train")[0]["values"]
    assert first["loss"] > math.log(2) + 0.5, "the SFT term (NLL of a random model, ~6 nats/token) is added"


def test_rejects_mismatched_loss_weights(small_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = small_spec | {}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {
        "loss_type": ["sigmoid", "ipo"],
        "loss_weights": [1],
    }
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])
    assert run.returncode == 65 and "loss_weights has 1 entries but loss_type has 2" in run.stderr
