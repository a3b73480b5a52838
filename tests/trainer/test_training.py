"""The trainer end to end, as a subprocess: what a user sees from `python -m alignd_trainer --spec`."""

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.trainer.harness import run_trainer, write_spec

TRL_METRICS = {
    "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
    "logps/rejected", "logits/chosen", "logits/rejected", "grad_norm", "learning_rate", "epoch", "num_tokens",
    "tokens_per_second",
}  # fmt: skip

pytestmark = pytest.mark.slow


def _score(model: str, data: Path, out: Path, ref: str | None = None) -> list[dict[str, Any]]:
    args = ["score", "--model", model, "--data", str(data), "--out", str(out)] + (
        ["--ref", ref] if ref else []
    )
    run = run_trainer(args)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_first_step_loss_is_ln2_and_metrics_use_trl_names(small_spec: dict[str, Any], tmp_path: Path) -> None:
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", small_spec))])
    assert run.returncode == 0, run.stderr
    train = run.metrics("train")
    assert [m["step"] for m in train] == list(range(1, 13))
    assert train[0]["values"]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert set(train[0]["values"]) >= TRL_METRICS
    assert run.events("done"), "a finished run reports a done event"


def test_learns_a_rule_held_out_accuracy_rises_above_0_9(
    small_spec: dict[str, Any], rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """Chosen answers name a thing of the asked category; the model learns it from 500 steps on CPU."""
    heldout = rule_data[1]
    spec = small_spec | {"validation_file": str(heldout)}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {
        "batch_size": 16, "n_epochs": 4, "max_steps": None, "eval_steps": 100, "save_steps": 250,
        "warmup_ratio": 0.05,
    }  # fmt: skip
    base_scores = _score(small_spec["model"], heldout, tmp_path / "before.jsonl")
    before = sum(s["chosen_logps"] > s["rejected_logps"] for s in base_scores) / len(base_scores)
    assert 0.2 < before < 0.8, "an untrained model prefers the chosen answer about half the time"

    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])
    assert run.returncode == 0, run.stderr
    evals = run.metrics("eval")
    assert evals[-1]["step"] == 500
    assert evals[-1]["values"]["eval_rewards/accuracies"] >= 0.9
    assert evals[-1]["values"]["eval_loss"] < evals[0]["values"]["eval_loss"]

    adapter = Path(spec["output_dir"]) / "adapter"
    scores = _score(str(adapter), heldout, tmp_path / "after.jsonl", ref=small_spec["model"])
    after = sum(s["reward_margin"] > 0 for s in scores) / len(scores)
    assert after >= 0.9
    assert [s["index"] for s in scores] == list(range(64))


def test_lora_output_loads_with_peft(small_spec: dict[str, Any], tmp_path: Path) -> None:
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", small_spec))])
    assert run.returncode == 0, run.stderr
    adapter = Path(small_spec["output_dir"]) / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(small_spec["model"])
    model = PeftModel.from_pretrained(base, adapter)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad(), model.disable_adapter():
        plain = model(input_ids=ids).logits
    assert not torch.allclose(model(input_ids=ids).logits, plain), "the trained adapter changes the outputs"


def test_full_fine_tuning_writes_loadable_weights(small_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = small_spec | {"training_type": "full"}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {"learning_rate": 1e-4}
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])
    assert run.returncode == 0, run.stderr
    trained = AutoModelForCausalLM.from_pretrained(Path(spec["output_dir"]) / "model")
    base = AutoModelForCausalLM.from_pretrained(small_spec["model"])
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained.state_dict()[weight], base.state_dict()[weight])
    assert run.metrics("train")[0]["values"]["loss"] == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("training_type", ["lora", "full"])
def test_precomputed_reference_gives_the_same_run(
    small_spec: dict[str, Any], tmp_path: Path, training_type: str
) -> None:
    """One reference pass up front must not change the numbers, only the cost per step."""
    losses = []
    for precompute in (False, True):
        spec = small_spec | {
            "training_type": training_type,
            "output_dir": str(tmp_path / f"out-{precompute}"),
        }
        spec["hyperparameters"] = small_spec["hyperparameters"] | {
            "precompute_ref_log_probs": precompute, "max_steps": 4, "learning_rate": 1e-3,
        }  # fmt: skip
        run = run_trainer(["--spec", str(write_spec(tmp_path / f"spec-{precompute}.json", spec))])
        assert run.returncode == 0, run.stderr
        losses.append([m["values"]["loss"] for m in run.metrics("train")])
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
