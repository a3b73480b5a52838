"""The DPO recipe: setup() loads everything and fails fast; train() reads top to bottom."""

import contextlib
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alignd.contract import (
    CheckpointReport,
    EventLevel,
    JobSpec,
    LRScheduler,
    MetricPoint,
    TrainerEvent,
    TrainingType,
)
from alignd.contract.steps import steps_per_epoch, total_steps
from alignd_trainer import checkpoint as ckpt
from alignd_trainer.artifacts import ArtifactSink, LocalSink
from alignd_trainer.attention import SDPA, attention_from_env, choose_attention
from alignd_trainer.data import (
    Batch,
    TokenizedData,
    TokenizedPair,
    collate,
    epoch_order,
    in_chunks,
    read_examples,
    tokenize_examples,
)
from alignd_trainer.displacement import WINDOW, StepSignal, displaced
from alignd_trainer.distributed import DistInfo, all_reduce_sum, barrier, gather_objects
from alignd_trainer.errors import BadInputError, Terminated
from alignd_trainer.logps import SequenceLogps, SequenceScorer
from alignd_trainer.losses import LossOutput, PairLogps, preference_loss
from alignd_trainer.metrics import MetricSums
from alignd_trainer.model import (
    AdapterDisabledReference,
    FrozenCopyReference,
    Reference,
    build_policy,
    packing_unsupported,
    resolve_device,
    set_attention,
)
from alignd_trainer.packing import PackedBatch, pack, token_budget
from alignd_trainer.report import Reporter

RefCache = dict[tuple[str, int], tuple[float, float]]
"""(split, row index) -> reference (chosen, rejected) log-probs."""


def lr_lambda(kind: LRScheduler, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up to the peak, then cosine / linear decay to zero, or constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if kind is LRScheduler.constant:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind is LRScheduler.linear:
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def micro_batches(indices: Sequence[int], *, world: int, accumulation: int, rank: int) -> list[list[int]]:
    """This rank's share of one global batch, as `accumulation` micro-batches, round-robin."""
    shards = world * accumulation
    return [list(indices[m * world + rank :: shards]) for m in range(accumulation)]


class DPORecipe:
    method_name = "DPO"
    """How events name what the recipe trains."""

    def __init__(
        self,
        spec: JobSpec,
        reporter: Reporter,
        dist_info: DistInfo,
        stop: threading.Event | None = None,
        sink: ArtifactSink | None = None,
    ) -> None:
        hp = spec.hyperparameters
        self.spec, self.hp, self.reporter, self.dist = spec, hp, reporter, dist_info
        self.stop = stop or threading.Event()
        self.sink = sink or LocalSink()
        self.shards = dist_info.world_size * hp.gradient_accumulation_steps
        if hp.batch_size < self.shards:
            raise BadInputError(
                f"batch_size {hp.batch_size} is smaller than GPUs × gradient_accumulation_steps "
                f"({self.shards}); raise batch_size or lower gradient_accumulation_steps"
            )
        self.output_dir = Path(spec.output_dir)
        self.step = 0
        self.last_saved_step = -1
        self.num_tokens = 0
        self._non_finite_warned: set[str] = set()
        self._signals: deque[StepSignal] = deque(maxlen=WINDOW)
        self._displacement_warned = False

    # ---- setup ---------------------------------------------------------------------------------------------

    def setup(self) -> None:
        seed_everything(self.spec.seed)
        self.device = resolve_device(self.dist.local_rank)
        self._event(
            "status",
            f"loading {self.spec.model}{self._init_note} for {self.spec.training_type} "
            f"{self.method_name} on {self.device}",
            data={"spec": self.spec.model_dump(mode="json"), "world_size": self.dist.world_size},
        )
        self.model, self.tokenizer, self.dtype = build_policy(self.spec, self.device)
        self.packing = self.hp.packing and self._packing_works()
        self.train_data = self._load_data(self.spec.training_file, "training")
        self.val_data = (
            self._load_data(self.spec.validation_file, "validation") if self.spec.validation_file else None
        )
        self.steps_per_epoch = self._steps_per_epoch(len(self.train_data.pairs))
        self.total_steps = total_steps(
            self.steps_per_epoch, n_epochs=self.hp.n_epochs, max_steps=self.hp.max_steps
        )
        self.reference = self._reference()
        self.ref_cache = self._precompute_reference() if self._precompute else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params,
            lr=self.spec.learning_rate,
            weight_decay=self.hp.weight_decay,
            fused=True,
        )
        warmup = int(self.hp.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.hp.lr_scheduler, warmup, self.total_steps)
        )
        scorer = SequenceScorer(self.model)
        self.scorer: nn.Module = DistributedDataParallel(scorer) if self.dist.enabled else scorer
        self._resume()

    @property
    def _init_note(self) -> str:
        init = self.spec.init
        return f" starting from {init.source} ({len(init.layers)} weight layers)" if init else ""

    def _new_sums(self) -> MetricSums:
        return MetricSums(self.device)

    def _packing_works(self) -> bool:
        """Picks the attention kernel for packed rows (`attention.choose_attention`), then probes it."""
        implementation, why_not = choose_attention(attention_from_env(os.environ), self.device)
        if why_not is not None:
            self._event("warning", why_not, level=EventLevel.warn, data={"attention": implementation})
        if implementation != SDPA:
            set_attention(self.model, implementation)
            reason = self._packing_unsupported()
            if reason is None:
                self._event("status", f"packed rows run {implementation}", data={"attention": implementation})
                return True
            self._event(
                "warning",
                f"{implementation} attention is off: {reason}",
                level=EventLevel.warn,
                data={"attention": SDPA},
            )
            set_attention(self.model, SDPA)
        reason = self._packing_unsupported()
        if reason is not None:
            self._event(
                "warning",
                f"packing is off, batches are padded: {reason}",
                level=EventLevel.warn,
                data={"packing": False, "reason": reason},
            )
        return reason is None

    def _packing_unsupported(self) -> str | None:
        return packing_unsupported(
            self.model, pad_token_id=self.tokenizer.pad_token_id, max_length=self.hp.max_length
        )

    @property
    def _precompute(self) -> bool:
        return self.hp.precompute_ref_log_probs

    def _load_data(self, path: str, name: str) -> TokenizedData:
        examples = read_examples(path)
        data = tokenize_examples(
            self.tokenizer,
            examples,
            max_length=self.hp.max_length,
            truncation_mode=self.hp.truncation_mode,
            agreement_threshold=self.spec.agreement_threshold,
        )
        if data.dropped_prompt_too_long:
            self._event(
                "warning",
                f"{data.dropped_prompt_too_long} {name} pairs dropped: the prompt alone fills "
                f"max_length={self.hp.max_length}",
                level=EventLevel.warn,
                data={"dropped_prompt_too_long": data.dropped_prompt_too_long, "file": name},
            )
        if data.dropped_low_agreement:
            self._event(
                "warning",
                f"{data.dropped_low_agreement} {name} pairs dropped: annotator agreement below "
                f"{self.spec.agreement_threshold}",
                level=EventLevel.warn,
                data={"dropped_low_agreement": data.dropped_low_agreement, "file": name},
            )
        if not data.pairs:
            raise BadInputError(f"no usable {name} pairs left after truncation and filtering")
        self._event(
            "status",
            f"{name} data: {len(data.pairs)} pairs ({examples[0].format} format)",
            data={"pairs": len(data.pairs), "format": str(examples[0].format), "file": name},
        )
        return data

    def _steps_per_epoch(self, pairs: int) -> int:
        """A final partial batch counts only if every rank and micro-step gets at least one pair."""
        steps = steps_per_epoch(pairs, batch_size=self.hp.batch_size, shards=self.shards)
        if steps == 0:
            raise BadInputError(
                f"the training file has {pairs} usable pairs, too few for one step split "
                f"over {self.shards} GPU micro-batches; add data or lower gradient_accumulation_steps"
            )
        return steps

    def _reference(self) -> Reference:
        if self.spec.training_type is TrainingType.lora:
            return AdapterDisabledReference(self.model)  # type: ignore[arg-type]
        return FrozenCopyReference(self.model)

    def _precompute_reference(self) -> RefCache:
        """One reference pass over the training and validation pairs, then no reference forward per step."""
        splits = [("train", self.train_data)] + ([("eval", self.val_data)] if self.val_data else [])
        started = time.monotonic()
        cache: RefCache = {}
        for split, data in splits:
            mine = data.pairs[self.dist.rank :: self.dist.world_size]
            for chunk in in_chunks(mine, self._micro_size):
                for batch in self._collate(chunk):
                    with self._autocast():
                        ref = self.reference.logps(batch)
                    chosen, rejected = ref.logps.chunk(2)
                    for index, c, r in zip(batch.indices, chosen.tolist(), rejected.tolist(), strict=True):
                        cache[(split, index)] = (c, r)
        for part in gather_objects(cache, self.dist):
            cache.update(part)  # type: ignore[call-overload]
        if isinstance(self.reference, FrozenCopyReference):
            del self.reference.model
        self._event(
            "status",
            f"reference log-probs precomputed for {len(cache)} pairs in {time.monotonic() - started:.1f}s",
        )
        return cache

    @property
    def _micro_size(self) -> int:
        return max(1, self.hp.batch_size // self.shards)

    def _resume(self) -> None:
        latest = ckpt.latest_checkpoint(self.output_dir)
        if latest is None:
            return
        state = ckpt.read_state(latest, self.spec)
        ckpt.load_checkpoint(
            latest, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, rank=self.dist.rank
        )
        self.step = self.last_saved_step = state.step
        self.num_tokens = int(state.metrics.get("num_tokens", 0))
        self._event("status", f"resumed from checkpoint at step {state.step}", data={"step": state.step})

    # ---- training ------------------------------------------------------------------------------------------

    def train(self) -> Path:
        self._event(
            "status",
            f"training for {self.total_steps} steps ({self.steps_per_epoch} per epoch)",
            data={"total_steps": self.total_steps, "step": self.step},
        )
        while self.step < self.total_steps:
            if self._stop_requested():
                self.save_checkpoint()
                raise Terminated(f"stopped at step {self.step} on SIGTERM; checkpoint saved")
            started = time.monotonic()
            sums = self._new_sums()
            micro = micro_batches(
                self._global_batch(self.step),
                world=self.dist.world_size,
                accumulation=self.hp.gradient_accumulation_steps,
                rank=self.dist.rank,
            )
            global_pairs = len(self._global_batch(self.step))
            for i, indices in enumerate(micro):
                batches = self._collate([self.train_data.pairs[j] for j in indices])
                for k, batch in enumerate(batches):
                    sync = i == len(micro) - 1 and k == len(batches) - 1
                    with self._no_sync(not sync):
                        loss = self._micro_step(batch, global_pairs, sums)
                        loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.hp.max_grad_norm))
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self._report_step(sums, grad_norm, float(lr), time.monotonic() - started)
            if self._due(self.hp.eval_steps):
                self.evaluate()
            if self._due(self.hp.save_steps):
                self.save_checkpoint()
        if self.val_data is not None and not self._due(self.hp.eval_steps):
            self.evaluate()
        return self.finish()

    def _due(self, every: int | None) -> bool:
        return every is not None and self.step % every == 0 and self.step < self.total_steps

    def _global_batch(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.train_data.pairs), seed=self.spec.seed, epoch=epoch)
        return order[position * self.hp.batch_size : (position + 1) * self.hp.batch_size]

    def _no_sync(self, skip_sync: bool) -> contextlib.AbstractContextManager[Any]:
        if skip_sync and isinstance(self.scorer, DistributedDataParallel):
            return self.scorer.no_sync()
        return contextlib.nullcontext()

    def _collate(self, pairs: Sequence[TokenizedPair]) -> list[Batch | PackedBatch]:
        """Padded: one batch. Packed: one batch per row of at most the token budget, each run on its own."""
        if self.packing:
            rows = pack(
                pairs,
                max_length=self.hp.max_length,
                truncation_mode=self.hp.truncation_mode,
                token_budget=token_budget(self.hp.max_length),
            )
            return [row.to(self.device) for row in rows]
        batch = collate(
            pairs,
            pad_token_id=self.tokenizer.pad_token_id,
            max_length=self.hp.max_length,
            truncation_mode=self.hp.truncation_mode,
        )
        return [batch.to(self.device)]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.dtype == torch.bfloat16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _pair_logps(
        self, batch: Batch | PackedBatch, split: str, scorer: nn.Module
    ) -> tuple[PairLogps, SequenceLogps]:
        with self._autocast():
            logps, tokens, logits_sum = scorer(batch)
            policy = SequenceLogps(logps, tokens, logits_sum)
            if self.ref_cache is not None:
                cached = [self.ref_cache[(split, index)] for index in batch.indices]
                ref = torch.tensor([c for c, _ in cached] + [r for _, r in cached], device=self.device)
            else:
                ref = self.reference.logps(batch).logps
        chosen, rejected = policy.logps.chunk(2)
        ref_chosen, ref_rejected = ref.chunk(2)
        chosen_tokens, rejected_tokens = policy.tokens.chunk(2)
        return PairLogps(chosen, rejected, ref_chosen, ref_rejected, chosen_tokens, rejected_tokens), policy

    def _forward(
        self, batch: Batch | PackedBatch, split: str, scorer: nn.Module, sums: MetricSums
    ) -> LossOutput:
        x, policy = self._pair_logps(batch, split, scorer)
        out = preference_loss(
            x,
            loss_types=self.hp.loss_type,
            weights=self.hp.weights(),
            beta=self.hp.beta,
            label_smoothing=self.hp.label_smoothing,
        )
        sums.add(out, x, policy, batch.weights, batch.num_tokens)
        return out

    def _micro_step(self, batch: Batch | PackedBatch, global_pairs: int, sums: MetricSums) -> torch.Tensor:
        out = self._forward(batch, "train", self.scorer, sums)
        # DDP averages gradients over ranks; scaling by world makes the result the mean over the global batch.
        return (out.losses * batch.weights).sum() * self.dist.world_size / global_pairs

    def _report_step(self, sums: MetricSums, grad_norm: float, lr: float, seconds: float) -> None:
        all_reduce_sum(sums.tensor, self.dist)
        self.num_tokens += sums.attention_tokens
        values = sums.averages()
        values |= {
            "grad_norm": grad_norm,
            "learning_rate": lr,
            "epoch": self.step / self.steps_per_epoch,
            "num_tokens": float(self.num_tokens),
            "tokens_per_second": sums.attention_tokens / max(seconds, 1e-9),
        }
        if self.device.type == "cuda":
            values["gpu_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.last_metrics = values
        self._report_metrics("train", values["epoch"], values)
        self._watch_displacement(values)

    def _watch_displacement(self, values: dict[str, float]) -> None:
        """One warning event per run when chosen log-probs fall while margins rise (see displacement)."""
        signal = StepSignal(self.step, values["logps/chosen_vs_ref"], values["rewards/margins"])
        if not (math.isfinite(signal.chosen_vs_ref) and math.isfinite(signal.margin)):
            return
        self._signals.append(signal)
        found = None if self._displacement_warned else displaced(list(self._signals))
        if found is not None:
            self._displacement_warned = True
            self._event(
                "warning",
                found.message(),
                level=EventLevel.warn,
                data={"signal": "likelihood_displacement"} | asdict(found),
            )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        assert self.val_data is not None
        was_training = self.model.training
        self.model.eval()
        sums = self._new_sums()
        mine = self.val_data.pairs[self.dist.rank :: self.dist.world_size]
        inner = self.scorer.module if isinstance(self.scorer, DistributedDataParallel) else self.scorer
        for chunk in in_chunks(mine, self._micro_size):
            for batch in self._collate(chunk):
                self._forward(batch, "eval", inner, sums)
        all_reduce_sum(sums.tensor, self.dist)
        self.model.train(was_training)
        values = sums.averages(prefix="eval_")
        self._report_metrics("eval", self.step / self.steps_per_epoch, values)
        return values

    def _report_metrics(
        self, split: Literal["train", "eval"], epoch: float, values: dict[str, float]
    ) -> None:
        """NaN and infinity have no JSON form: such values are left out of the point, and a warning event
        names each one the first time it happens (a diverging loss should be seen, not break reporting)."""
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        for name in sorted(set(values) - set(finite) - self._non_finite_warned):
            self._non_finite_warned.add(name)
            self._event(
                "warning",
                f"{name} is {values[name]} at step {self.step}; it is left out of the metrics while it "
                "is not finite (lower learning_rate, or check the data)",
                level=EventLevel.warn,
                data={"metric": name, "step": self.step},
            )
        if self.dist.is_main:
            self.reporter.metrics(MetricPoint(step=self.step, split=split, epoch=epoch, values=finite))

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self.stop.is_set() else 0.0], device=self.device)
        return bool(all_reduce_sum(flag, self.dist).item() > 0)

    # ---- checkpoints and output ----------------------------------------------------------------------------

    def save_checkpoint(self, *, final: bool = False) -> Path | None:
        if self.step == self.last_saved_step or self.step == 0:
            return None
        rngs = gather_objects(ckpt.rng_state(), self.dist)
        path = ckpt.step_dir(self.output_dir, self.step)
        if self.dist.is_main:
            metrics = dict(getattr(self, "last_metrics", {}))
            state = ckpt.TrainingState(
                self.step, int(self.step // self.steps_per_epoch), metrics, ckpt.fingerprint(self.spec)
            )
            path = ckpt.save_checkpoint(
                output_dir=self.output_dir,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=state,
                rng_states=rngs,  # type: ignore[arg-type]
            )
            location = self.sink.publish(path, f"checkpoints/{path.name}")
            self.reporter.checkpoint(
                CheckpointReport(step=self.step, path=location, metrics=metrics, final=final)
            )
        barrier(self.dist)
        self.last_saved_step = self.step
        return path

    def finish(self) -> Path:
        self.save_checkpoint(final=True)
        target = self.output_dir
        if self.dist.is_main:
            target = ckpt.save_weights(self.model, self.output_dir, self.tokenizer)
            location = self.sink.publish(target, target.name)
            self._event(
                "done",
                f"training finished at step {self.step}; weights in {location}",
                data={"step": self.step, "path": location, "metrics": getattr(self, "last_metrics", {})},
            )
        barrier(self.dist)
        return target

    def cleanup(self) -> None:
        self.reporter.flush()

    def _event(
        self,
        type_: str,
        message: str,
        *,
        level: EventLevel = EventLevel.info,
        data: dict[str, Any] | None = None,
    ) -> None:
        if self.dist.is_main:
            self.reporter.event(TrainerEvent(type=type_, level=level, message=message, data=data or {}))
