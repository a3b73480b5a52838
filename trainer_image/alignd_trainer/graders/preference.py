"""The `preference` grader: on held-out preference pairs, does the model prefer chosen, and by how much
more than the base does.

It scores exactly as training does (`data.tokenize_example`, `data.collate`, `logps.sequence_logps`):
log π(y|x) sums the completion tokens' log-probs, EOS included. An item passes when
log π(chosen) > log π(rejected); its score is the implicit reward margin against the base,
β·((log π(c) − log π_base(c)) − (log π(r) − log π_base(r))). For a LoRA model the base is the same
weights with the adapter switched off (no second copy); for the base model itself the margin is 0, so
base and tuned runs report the same two measures side by side.
"""

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from alignd.contract import RowError, TruncationMode, parse_preference_line
from alignd.contract.eval_items import GraderResult
from alignd.contract.evals import PreferenceGrader
from alignd_trainer.data import TokenizedPair, collate, tokenize_example
from alignd_trainer.logps import sequence_logps


def _reference(model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """The base model's weights: a PEFT model with its adapter disabled, or the model itself."""
    disable = getattr(model, "disable_adapter", None)
    return disable() if callable(disable) else contextlib.nullcontext()


def _has_adapter(model: nn.Module) -> bool:
    return callable(getattr(model, "disable_adapter", None))


def _failed(grader: PreferenceGrader, error: str) -> GraderResult:
    return GraderResult(name=grader.name, type=grader.type, score=0.0, passed=False, error=error)


class PreferenceScorer:
    """Scores preference items with one loaded model (and its base, under the adapter)."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, device: torch.device, *, reference: nn.Module | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.reference = reference
        """A separate reference model (same tokenizer); None: the model's own base."""

    def grade(
        self, grader: PreferenceGrader, items: Sequence[tuple[int, dict[str, Any]]]
    ) -> dict[int, GraderResult]:
        """One result per item index: items that are not preference rows fail with the reason."""
        results: dict[int, GraderResult] = {}
        pairs: list[TokenizedPair] = []
        for index, item in items:
            try:
                example = parse_preference_line(json.dumps(item), index + 1)
            except RowError as error:
                results[index] = _failed(grader, f"not a preference pair: {error.message}")
                continue
            pair = tokenize_example(self.tokenizer, example, index)
            if len(pair.prompt_ids) >= grader.max_length:
                results[index] = _failed(
                    grader, f"the prompt has {len(pair.prompt_ids)} tokens, max_length is {grader.max_length}"
                )
                continue
            pairs.append(pair)
        if pairs:
            results.update(self._score(grader, pairs))
        return results

    @torch.no_grad()
    def _score(
        self, grader: PreferenceGrader, pairs: list[TokenizedPair]
    ) -> Iterator[tuple[int, GraderResult]]:
        batch = collate(
            pairs,
            pad_token_id=self.tokenizer.pad_token_id,
            max_length=grader.max_length,
            truncation_mode=TruncationMode.keep_start,
        ).to(self.device)
        inputs = (batch.input_ids, batch.attention_mask, batch.completion_mask)
        chosen, rejected = sequence_logps(self.model, *inputs).logps.chunk(2)
        if self.reference is not None:
            ref_chosen, ref_rejected = sequence_logps(self.reference, *inputs).logps.chunk(2)
        elif _has_adapter(self.model):
            with _reference(self.model):
                ref_chosen, ref_rejected = sequence_logps(self.model, *inputs).logps.chunk(2)
        else:
            ref_chosen, ref_rejected = chosen, rejected
        for i, pair in enumerate(pairs):
            margin = grader.beta * ((chosen[i] - ref_chosen[i]) - (rejected[i] - ref_rejected[i])).item()
            yield (
                pair.index,
                GraderResult(
                    name=grader.name,
                    type=grader.type,
                    score=margin,
                    passed=bool(chosen[i] > rejected[i]),
                    alignd={
                        "chosen_logps": chosen[i].item(),
                        "rejected_logps": rejected[i].item(),
                        "ref_chosen_logps": ref_chosen[i].item(),
                        "ref_rejected_logps": ref_rejected[i].item(),
                        "reward_margin": margin,
                    },
                ),
            )
