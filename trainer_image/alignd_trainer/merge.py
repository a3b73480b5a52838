"""The merged model of a LoRA run: the base with the adapter folded into its weights, one directory that
loads with `AutoModelForCausalLM.from_pretrained`, for serving stacks and users that take no adapter.

Made once, at the end of a run, from the policy still in memory: the trainer is about to exit, so the
adapter is merged in place (no second copy of the base), after the adapter itself is saved and
published. It is written in the dtype the base is stored in, so it is the size of the base.
"""

from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import AutoConfig

from alignd.contract import EventLevel, JobSpec, TrainerEvent, TrainingType
from alignd_trainer.artifacts import ArtifactSink
from alignd_trainer.errors import OutOfMemory, TrainerError
from alignd_trainer.report import Reporter

MERGED = "merged"
"""The local directory under output_dir, and the artifact name the control plane stores it under."""


def wants_merged(spec: JobSpec) -> bool:
    return spec.training_type is TrainingType.lora and spec.merged_weights


def stored_dtype(model: str, *, trust_remote_code: bool = False) -> torch.dtype | None:
    """The dtype the base's weights are saved in (config `dtype`, or the older `torch_dtype`); None when
    its config does not say. The model in memory is in the compute dtype, which may differ."""
    dtype = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def merge_in_place(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """The base with each adapted weight replaced by W + (alpha / r)·B·A and the LoRA layers removed,
    cast to `dtype` (kept as it is when None). Consumes `model`: the layers changed are its own."""
    if not isinstance(model, PeftModel):
        raise TrainerError(f"only a LoRA policy (PeftModel) can be merged, not {type(model).__name__}")
    merged: nn.Module = model.merge_and_unload()
    if dtype is not None:
        merged.to(dtype)
    return merged


def save_merged(model: nn.Module, tokenizer: Any, output_dir: Path) -> Path:
    """output_dir/merged/: safetensors weights, config.json, generation_config.json and the tokenizer."""
    target = output_dir / MERGED
    model.save_pretrained(target, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(target)
    return target


def publish_merged(
    model: nn.Module, tokenizer: Any, *, spec: JobSpec, sink: ArtifactSink, reporter: Reporter
) -> str:
    """Merge, write, publish as the `merged` artifact and report where it went; returns that place."""
    dtype = stored_dtype(spec.model, trust_remote_code=spec.trust_remote_code)
    try:
        merged = merge_in_place(model, dtype)
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of GPU memory merging the adapter into the base ({str(exc).splitlines()[0]}); the "
            "adapter is stored: create the job with alignd.merged_weights false, or merge it offline"
        ) from None
    target = save_merged(merged, tokenizer, Path(spec.output_dir))
    location = sink.publish(target, MERGED)
    written = str(next(merged.parameters()).dtype).removeprefix("torch.")
    reporter.event(
        TrainerEvent(
            type="merged",
            level=EventLevel.info,
            message=f"base model with the adapter merged in ({written}) stored in {location}",
            data={"path": location, "dtype": written},
        )
    )
    return location
