"""`python -m alignd_trainer score`: per-pair log-probs (and reward margins) for auditing data.

It runs exactly the training code path (same tokenization, truncation and log-prob function),
so a pair's score here is what the trainer sees.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from alignd.contract import TruncationMode
from alignd_trainer.data import TokenizedPair, collate, read_examples, tokenize_example
from alignd_trainer.logps import sequence_logps
from alignd_trainer.model import load_scoring_model, load_tokenizer, resolve_device


def score_file(
    *,
    model_dir: str,
    data: str,
    out: TextIO,
    ref_dir: str | None = None,
    max_length: int = 1024,
    beta: float = 0.1,
    batch_size: int = 8,
    truncation_mode: TruncationMode = TruncationMode.keep_start,
) -> int:
    """Write one JSON line per input pair, in input order; returns the number of pairs."""
    device = resolve_device()
    model, base = load_scoring_model(model_dir, device=device, dtype=torch.float32)
    ref = load_scoring_model(ref_dir, device=device, dtype=torch.float32)[0] if ref_dir else None
    tokenizer = load_tokenizer(base)
    pairs = [tokenize_example(tokenizer, example, i) for i, example in enumerate(read_examples(data))]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = collate(
            chunk, pad_token_id=tokenizer.pad_token_id, max_length=max_length, truncation_mode=truncation_mode
        ).to(device)
        for row in _score_batch(
            model, ref, batch.input_ids, batch.attention_mask, batch.completion_mask, chunk, beta
        ):
            out.write(json.dumps(row) + "\n")
    return len(pairs)


@torch.no_grad()
def _score_batch(
    model: nn.Module,
    ref: nn.Module | None,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    pairs: Sequence[TokenizedPair],
    beta: float,
) -> list[dict[str, Any]]:
    policy = sequence_logps(model, input_ids, attention_mask, completion_mask)
    chosen, rejected = policy.logps.chunk(2)
    chosen_tokens, rejected_tokens = policy.tokens.chunk(2)
    prompt_tokens = (attention_mask.sum(1) - completion_mask.sum(1)).chunk(2)[0]
    rows = [
        {
            "index": pair.index,
            "chosen_logps": chosen[i].item(),
            "rejected_logps": rejected[i].item(),
            "chosen_tokens": int(chosen_tokens[i]),
            "rejected_tokens": int(rejected_tokens[i]),
            "prompt_tokens": int(prompt_tokens[i]),
        }
        for i, pair in enumerate(pairs)
    ]
    if ref is not None:
        reference = sequence_logps(ref, input_ids, attention_mask, completion_mask)
        ref_chosen, ref_rejected = reference.logps.chunk(2)
        for i, row in enumerate(rows):
            row["ref_chosen_logps"] = ref_chosen[i].item()
            row["ref_rejected_logps"] = ref_rejected[i].item()
            margin = (chosen[i] - ref_chosen[i]) - (rejected[i] - ref_rejected[i])
            row["reward_margin"] = beta * margin.item()
    return rows


def score_to_path(out_path: str | Path, **kwargs: Any) -> int:
    with open(out_path, "w") as out:
        return score_file(out=out, **kwargs)
