"""Packed and padded training runs are the same run: same losses, token counts and held-out accuracy."""

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from alignd.contract import JobSpec
from alignd_trainer.data import Batch
from alignd_trainer.distributed import DistInfo
from alignd_trainer.loop import DPORecipe, micro_batches
from alignd_trainer.metrics import MetricSums
from alignd_trainer.packing import PackedBatch
from alignd_trainer.report import StdoutReporter
from tests.trainer.harness import TrainerRun, run_trainer, write_spec

pytestmark = pytest.mark.slow


def _run(spec: dict[str, Any], tmp_path: Path, name: str, **hyper: Any) -> TrainerRun:
    spec = spec | {"output_dir": str(tmp_path / name)}
    spec["hyperparameters"] = spec["hyperparameters"] | hyper
    run = run_trainer(["--spec", str(write_spec(tmp_path / f"{name}.json", spec))])
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.parametrize(("training_type", "precompute"), [("lora", False), ("full", True)])
def test_packing_changes_the_cost_of_a_step_not_its_numbers(
    small_spec: dict[str, Any], tmp_path: Path, training_type: str, precompute: bool
) -> None:
    spec = small_spec | {"training_type": training_type}
    hyper = {
        "max_steps": 4, "learning_rate": 1e-3, "precompute_ref_log_probs": precompute,
        "gradient_accumulation_steps": 2,
    }  # fmt: skip
    padded, packed = (_run(spec, tmp_path, f"packing-{p}", packing=p, **hyper) for p in (False, True))
    for name in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
        want = [m["values"][name] for m in padded.metrics("train")]
        assert [m["values"][name] for m in packed.metrics("train")] == pytest.approx(want, abs=1e-4), name
    tokens = [[m["values"]["num_tokens"] for m in run.metrics("train")] for run in (padded, packed)]
    assert tokens[0] == tokens[1], "num_tokens counts the unpacked rows either way"
    assert padded.metrics("train")[-1]["values"]["loss"] != padded.metrics("train")[0]["values"]["loss"]


def test_a_packed_run_learns_what_a_padded_run_learns(
    small_spec: dict[str, Any], rule_data: tuple[Path, Path], tmp_path: Path
) -> None:
    spec = small_spec | {"validation_file": str(rule_data[1])}
    hyper = {"batch_size": 16, "max_steps": 120, "eval_steps": 60, "save_steps": 1000}
    runs = [_run(spec, tmp_path, f"learn-{p}", packing=p, **hyper) for p in (False, True)]
    padded, packed = ([m["values"] for m in run.metrics("eval")] for run in runs)
    assert len(padded) == len(packed) == 2
    assert packed[-1]["eval_rewards/accuracies"] == pytest.approx(
        padded[-1]["eval_rewards/accuracies"], abs=0.05
    )
    assert packed[-1]["eval_loss"] == pytest.approx(padded[-1]["eval_loss"], abs=0.02)
    for run in (padded, packed):
        assert run[-1]["eval_loss"] < run[0]["eval_loss"], "both runs learned something"


@pytest.fixture
def sdpa_ignoring_masks() -> Iterator[None]:
    """This process's SDPA replaced by a kernel that knows only causal masks, as some fused kernels do."""

    def causal_only(
        module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Any, **kw: Any
    ) -> Any:
        return sdpa_attention_forward(module, query, key, value, None, **kw)

    original = AttentionInterface._global_mapping["sdpa"]
    AttentionInterface._global_mapping["sdpa"] = causal_only
    yield
    AttentionInterface._global_mapping["sdpa"] = original


def _one_step(small_spec: dict[str, Any]) -> tuple[DPORecipe, list[dict[str, Any]]]:
    """A one-step run of the small spec: the recipe and every payload it wrote."""
    spec = JobSpec.model_validate(
        small_spec | {"hyperparameters": small_spec["hyperparameters"] | {"max_steps": 1}}
    )
    out = io.StringIO()
    recipe = DPORecipe(spec, StdoutReporter(out), DistInfo())
    recipe.setup()
    recipe.train()
    return recipe, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.usefixtures("sdpa_ignoring_masks")
def test_a_model_whose_attention_ignores_the_mask_trains_padded_with_a_warning(
    small_spec: dict[str, Any],
) -> None:
    recipe, lines = _one_step(small_spec)
    warnings = [line for line in lines if line["kind"] == "event" and line["type"] == "warning"]
    assert [w["data"]["packing"] for w in warnings] == [False]
    assert "'sdpa' does not apply a custom 4D attention mask" in warnings[0]["message"]
    assert not recipe.packing
    assert [line["step"] for line in lines if line["kind"] == "metrics"] == [1]


class _RecordingRecipe(DPORecipe):
    """The real recipe, noting which pairs each micro-batch (padded batch or packed row) ran at each step."""

    ran: dict[int, list[list[int]]]

    def _micro_step(self, batch: Batch | PackedBatch, global_pairs: int, sums: MetricSums) -> torch.Tensor:
        self.ran.setdefault(self.step, []).append(list(batch.indices))
        return super()._micro_step(batch, global_pairs, sums)


def _pairs_per_step(spec: dict[str, Any], packing: bool) -> tuple[dict[int, list[list[int]]], DPORecipe]:
    spec = spec | {
        "output_dir": f"{spec['output_dir']}-packing-{packing}",
        "hyperparameters": spec["hyperparameters"] | {"packing": packing},
    }
    recipe = _RecordingRecipe(JobSpec.model_validate(spec), StdoutReporter(io.StringIO()), DistInfo())
    recipe.ran = {}
    recipe.setup()
    recipe.train()
    return recipe.ran, recipe


def test_packing_runs_the_same_pairs_in_each_optimizer_step(small_spec: dict[str, Any]) -> None:
    """batch_size pairs per step, in the seed's order, dealt to the same accumulation shards; packing only
    splits each shard into rows of at most the token budget (2 × max_length), here several per shard."""
    hyper = {"batch_size": 12, "gradient_accumulation_steps": 2, "max_steps": 3, "max_length": 32}
    spec = small_spec | {"hyperparameters": small_spec["hyperparameters"] | hyper}
    padded, recipe = _pairs_per_step(spec, packing=False)
    packed, _ = _pairs_per_step(spec, packing=True)
    assert sorted(padded) == sorted(packed) == [0, 1, 2]
    for step in padded:
        shards = micro_batches(recipe._global_batch(step), world=1, accumulation=2, rank=0)
        assert padded[step] == shards, "padded: one batch per shard, in the shard's order"
        rows = packed[step]
        assert len(rows) > len(shards), "packed: the shards are cut into several rows"
        owner = [next((k for k, shard in enumerate(shards) if set(row) <= set(shard)), -1) for row in rows]
        assert owner == sorted(owner) and owner[0] == 0, "shard by shard, each row within one shard"
        for k, shard in enumerate(shards):
            mine = [row for row, o in zip(rows, owner, strict=True) if o == k]
            assert sorted(i for row in mine for i in row) == sorted(shard)
            assert all(row == sorted(row, key=shard.index) for row in mine), "a row keeps its shard's order"


def test_flex_attention_asked_for_on_cpu_trains_packed_with_sdpa_and_says_why(
    small_spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIGND_TRAINER_ATTENTION", "flex")
    recipe, lines = _one_step(small_spec)
    warnings = [line for line in lines if line["kind"] == "event" and line["type"] == "warning"]
    assert [w["data"] for w in warnings] == [{"attention": "sdpa"}]
    assert "FlexAttention cannot train on CPU" in warnings[0]["message"]
    assert recipe.packing
    assert [line["step"] for line in lines if line["kind"] == "metrics"] == [1]
