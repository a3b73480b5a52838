"""Under DDP (two CPU processes, gloo) a packed step gives each pair the log-probs, and the model the
gradients, of the padded step.

Each rank takes its share of the global batch the way the trainer does (`micro_batches`) and runs it padded
(one forward) and packed (one forward per row, all but the last without gradient sync). The rows are cut
small enough that the ranks run different numbers of rows: DDP must still all-reduce exactly once.
"""

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoTokenizer

from alignd.contract import TruncationMode
from alignd_trainer.data import collate, read_examples, tokenize_examples
from alignd_trainer.logps import SequenceScorer
from alignd_trainer.loop import micro_batches
from alignd_trainer.packing import pack
from alignd_trainer.synthetic import write_jsonl
from tests.trainer.test_packing import ARCHITECTURES, _with_lora
from tests.trainer.test_trl_parity import MAX_LENGTH, rows_for

pytestmark = pytest.mark.slow

WORLD = 2
BUDGETS = {TruncationMode.keep_start: 48, TruncationMode.keep_end: 40}
"""Tokens per row, small enough that a rank's share packs into several rows, and the two ranks' shares of the
test rows into different counts."""

Results = dict[str, Any]


def _pair_weights(pairs: int) -> torch.Tensor:
    """A loss weight per (pair, side), so that every log-prob's gradient counts with its own sign and size."""
    return torch.linspace(-1.0, 1.0, 2 * pairs).reshape(pairs, 2)


def _step(
    model: nn.Module, batches: list[Any], weights: torch.Tensor
) -> tuple[dict[int, tuple[float, float]], dict[str, torch.Tensor], int]:
    """One optimizer step's forward and backward through DDP: per-pair logps (this rank) and synced grads."""
    scorer = DistributedDataParallel(SequenceScorer(model))
    logps: dict[int, tuple[float, float]] = {}
    for k, batch in enumerate(batches):
        sync = k == len(batches) - 1
        with contextlib.nullcontext() if sync else scorer.no_sync():
            out, _tokens, _logits = scorer(batch)
            chosen, rejected = out.chunk(2)
            index = torch.tensor(batch.indices)
            loss = (chosen * weights[index, 0]).sum() + (rejected * weights[index, 1]).sum()
            loss.backward()
        for i, c, r in zip(batch.indices, chosen.tolist(), rejected.tolist(), strict=True):
            logps[i] = (c, r)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps, grads, len(batches)


def _worker(rank: int, tmp: str, model_dir: str, architecture: str, training: str, mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    try:
        truncation = TruncationMode(mode)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        examples = read_examples(write_jsonl(Path(tmp) / f"rows-{rank}.jsonl", rows_for("standard")[0]))
        pairs = tokenize_examples(
            tokenizer, examples, max_length=MAX_LENGTH, truncation_mode=truncation
        ).pairs
        [mine] = micro_batches(list(range(len(pairs))), world=WORLD, accumulation=1, rank=rank)
        my_pairs = [pairs[i] for i in mine]
        torch.manual_seed(0)
        base = ARCHITECTURES[architecture](len(tokenizer)).train()
        model = _with_lora(base) if training == "lora" else base
        weights = _pair_weights(len(pairs))

        padded = collate(
            my_pairs, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH, truncation_mode=truncation
        )
        budget = BUDGETS[truncation]
        rows = pack(my_pairs, max_length=MAX_LENGTH, truncation_mode=truncation, token_budget=budget)
        results: Results = {}
        for name, batches in (("padded", [padded]), ("packed", rows)):
            logps, grads, count = _step(copy.deepcopy(model), batches, weights)
            gathered: list[Any] = [None] * WORLD
            dist.all_gather_object(gathered, (logps, count))
            results[name] = {
                "logps": {i: v for part, _ in gathered for i, v in part.items()},
                "grads": grads,
                "batches": [c for _, c in gathered],
            }
        torch.save(results, Path(tmp) / f"results-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("architecture", "training", "mode"),
    [
        ("llama", "lora", TruncationMode.keep_start),
        ("qwen2", "full", TruncationMode.keep_end),
    ],
    ids=["llama-lora-keep_start", "qwen2-full-keep_end"],
)
def test_a_packed_ddp_step_equals_the_padded_one(
    tiny_model_dir: Path, tmp_path: Path, architecture: str, training: str, mode: TruncationMode
) -> None:
    mp.spawn(
        _worker,
        args=(str(tmp_path), str(tiny_model_dir), architecture, training, str(mode)),
        nprocs=WORLD,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"results-{r}.pt", weights_only=False) for r in range(WORLD)]
    padded, packed = ranks[0]["padded"], ranks[0]["packed"]
    assert packed["batches"][0] != packed["batches"][1], "the ranks ran different numbers of packed rows"
    assert max(packed["batches"]) > 1, "a rank ran several rows, all but the last without sync"

    assert padded["logps"].keys() == packed["logps"].keys() and len(padded["logps"]) > WORLD
    for i, (chosen, rejected) in padded["logps"].items():
        assert packed["logps"][i] == pytest.approx((chosen, rejected), abs=1e-4), f"pair {i}"

    for rank in ranks:
        assert rank["packed"]["grads"].keys() == padded["grads"].keys() and padded["grads"]
        for name, want in padded["grads"].items():
            torch.testing.assert_close(rank["padded"]["grads"][name], want, rtol=0, atol=0)
            scale = want.abs().max().item()
            error = (rank["packed"]["grads"][name] - want).abs().max().item()
            assert error <= 1e-4 * scale + 1e-7, name
