"""The SFT recipe: DPO's training loop (steps, accumulation, DDP, checkpoints, reports, artifacts) with
chat rows and the supervised loss in place of preference pairs and the DPO loss.

Batches are padded (no prompt-sharing packing: an SFT row has no pair to share a prompt with). There is
no reference model. The loss is `losses.supervised_token_losses`: per trained token, over the global
batch, so gradient accumulation and GPUs do not change what a step optimises.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from alignd.contract import EventLevel, JobSpec, TrainingMethod
from alignd_trainer.chat_data import TokenizedChats, collate_chats, read_chats, tokenize_chats
from alignd_trainer.data import Batch
from alignd_trainer.errors import BadInputError
from alignd_trainer.logps import SequenceLogps
from alignd_trainer.loop import DPORecipe
from alignd_trainer.losses import LossOutput, supervised_token_losses
from alignd_trainer.metrics import MetricSums, SupervisedMetricSums
from alignd_trainer.model import Reference
from alignd_trainer.packing import PackedBatch


class NoReference:
    """SFT compares the policy with nothing; asking for reference log-probs is a bug."""

    def logps(self, batch: Batch | PackedBatch) -> SequenceLogps:
        raise RuntimeError("supervised fine-tuning has no reference model")


class SFTRecipe(DPORecipe):
    method_name = "SFT"

    def _packing_works(self) -> bool:
        return False

    @property
    def _precompute(self) -> bool:
        return False

    def _reference(self) -> Reference:
        return NoReference()

    def _new_sums(self) -> MetricSums:
        return SupervisedMetricSums(self.device)

    def _watch_displacement(self, values: dict[str, float]) -> None:
        """No reference model and no margins: likelihood displacement is a preference-training signal."""

    def _load_data(self, path: str, name: str) -> TokenizedChats:  # type: ignore[override]
        examples = read_chats(path)
        data = tokenize_chats(
            self.tokenizer, examples, max_length=self.hp.max_length, truncation_mode=self.hp.truncation_mode
        )
        if data.dropped_untrained:
            self._event(
                "warning",
                f"{data.dropped_untrained} {name} rows skipped: no assistant token to train on (no assistant "
                f"turn with weight 1, or truncation at max_length={self.hp.max_length} cut it off)",
                level=EventLevel.warn,
                data={"dropped_untrained": data.dropped_untrained, "file": name},
            )
        if not data.pairs:
            raise BadInputError(f"no usable {name} rows left: none has an assistant turn to train on")
        trained = sum(item.loss_tokens for item in data.pairs)
        self._event(
            "status",
            f"{name} data: {len(data.pairs)} conversations, {trained} trained tokens (chat format)",
            data={"rows": len(data.pairs), "trained_tokens": trained, "format": "chat", "file": name},
        )
        return data

    def _collate(self, pairs: Sequence[Any]) -> list[Batch | PackedBatch]:
        return [collate_chats(pairs, pad_token_id=self.tokenizer.pad_token_id).to(self.device)]

    def _forward(
        self, batch: Batch | PackedBatch, split: str, scorer: nn.Module, sums: MetricSums
    ) -> LossOutput:
        assert isinstance(sums, SupervisedMetricSums)
        with self._autocast():
            logps, tokens, _ = scorer(batch)
        sums.add_sequences(logps, tokens, batch.num_tokens)
        total = self._step_tokens() if split == "train" else int(tokens.sum())
        zeros = torch.zeros_like(logps).detach()
        return LossOutput(supervised_token_losses(logps, total), zeros, zeros)

    def _micro_step(self, batch: Batch | PackedBatch, global_pairs: int, sums: MetricSums) -> torch.Tensor:
        out = self._forward(batch, "train", self.scorer, sums)
        # DDP averages gradients over ranks; the losses are already shares of the global batch's tokens.
        return (out.losses * batch.weights).sum() * self.dist.world_size

    def _step_tokens(self) -> int:
        """Trained tokens in this step's global batch, the same on every rank without communication."""
        if getattr(self, "_tokens_for", None) != self.step:
            rows: Sequence[Any] = self.train_data.pairs  # TokenizedChat items (see _load_data)
            self._tokens = sum(rows[j].loss_tokens for j in self._global_batch(self.step))
            self._tokens_for = self.step
        return self._tokens


def recipe_class(spec: JobSpec) -> type[DPORecipe]:
    return SFTRecipe if spec.method is TrainingMethod.supervised else DPORecipe
