"""Loading the base model and tokenizer, wrapping it for LoRA or full training, and the reference."""

import copy
import json
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignd.contract import JobSpec, LoraSpec, Precision, TruncationMode, WeightsKind
from alignd_trainer.attention import unmaskable_layer_types
from alignd_trainer.data import Batch, TokenizedPair, collate
from alignd_trainer.errors import BadInputError
from alignd_trainer.logps import SequenceLogps, batch_logps, causal_lm_of, packed_logps, sequence_logps
from alignd_trainer.packing import PackedBatch, pack


def resolve_device(local_rank: int = 0) -> torch.device:
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it; CPU training stays in fp32."""
    if precision is Precision.fp32 or device.type != "cuda":
        return torch.float32
    if precision is Precision.bf16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _check_model_dir(path: str) -> None:
    local = Path(path)
    if local.exists() and not (local / "config.json").exists():
        raise BadInputError(
            f"base model directory {path} has no config.json; point 'model' at a saved "
            "transformers model directory"
        )


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> Any:
    _check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise BadInputError(f"cannot load the tokenizer of {path}: {exc}") from None
    if tokenizer.eos_token is None:
        raise BadInputError(f"the tokenizer of {path} has no eos_token; DPO completions need one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str, *, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False
) -> nn.Module:
    _check_model_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise BadInputError(f"cannot load the base model {path}: {exc}") from None
    disable_dropout(model)
    model.to(device)  # type: ignore[arg-type]
    return model


def load_start_model(spec: JobSpec, *, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The weights training starts from: the base, or (`spec.init`) the base with each layer applied in
    order: full weights replace the model, a LoRA adapter is merged into it (W + (alpha/r)·B·A)."""
    layers = spec.init.layers if spec.init is not None else []
    full = [i for i, layer in enumerate(layers) if layer.kind is WeightsKind.full]
    start = full[-1] if full else -1
    path = layers[start].location if full else spec.model
    model = load_causal_lm(path, dtype=dtype, device=device, trust_remote_code=spec.trust_remote_code)
    for layer in layers[start + 1 :]:
        if not (Path(layer.location) / "adapter_config.json").exists():
            raise BadInputError(f"the starting adapter {layer.location} has no adapter_config.json")
        try:
            model = PeftModel.from_pretrained(model, layer.location).merge_and_unload()
        except (ValueError, OSError, KeyError) as exc:
            raise BadInputError(
                f"cannot apply the starting adapter {layer.location} to {path}: {exc}"
            ) from None
    return model


def disable_dropout(model: nn.Module) -> None:
    """DPO compares policy and reference on the same tokens; dropout would make them disagree by noise."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def lora_config(spec: LoraSpec) -> LoraConfig:
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # peft annotates int, accepts float
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )


def wrap_lora(model: nn.Module, spec: LoraSpec) -> PeftModel:
    try:
        return get_peft_model(model, lora_config(spec))
    except ValueError as exc:
        raise BadInputError(
            f"lora.target_modules {spec.target_modules!r} does not fit this model: {exc}"
        ) from None


def enable_gradient_checkpointing(model: nn.Module) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]


def set_attention(model: nn.Module, implementation: str) -> None:
    """Switches the attention kernel of the CausalLM (inside a PEFT wrapper too), e.g. `flex_attention`."""
    causal_lm_of(model).set_attn_implementation(implementation)  # type: ignore[operator]


class Reference(Protocol):
    """Reference log-probs for a batch; never builds a graph."""

    def logps(self, batch: Batch | PackedBatch) -> SequenceLogps: ...


class AdapterDisabledReference:
    """LoRA: the base model is the policy with its adapters switched off, so no second copy exists."""

    def __init__(self, model: PeftModel) -> None:
        self.model = model

    @torch.no_grad()
    def logps(self, batch: Batch | PackedBatch) -> SequenceLogps:
        with self.model.disable_adapter():
            return batch_logps(self.model, batch)


class FrozenCopyReference:
    """Full fine-tuning: a frozen copy of the initial weights."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def logps(self, batch: Batch | PackedBatch) -> SequenceLogps:
        return batch_logps(self.model, batch)


def build_policy(spec: JobSpec, device: torch.device) -> tuple[nn.Module, Any, torch.dtype]:
    """The trainable model (LoRA-wrapped or full), its tokenizer and compute dtype."""
    dtype = resolve_dtype(spec.precision, device)
    tokenizer = load_tokenizer(spec.model, trust_remote_code=spec.trust_remote_code)
    model = load_start_model(spec, dtype=dtype, device=device)
    if spec.hyperparameters.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if spec.training_type == "lora":
        model = wrap_lora(model, spec.lora)
    model.train()
    return model, tokenizer, dtype


def load_scoring_model(path: str, *, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, str]:
    """A saved adapter directory (with its base) or a full model directory, ready for inference."""
    adapter_config = Path(path) / "adapter_config.json"
    if adapter_config.exists():
        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_causal_lm(base, dtype=dtype, device=device), path)
        return model.eval(), base
    return load_causal_lm(path, dtype=dtype, device=device).eval(), path


PROBE_PAIRS = ((5, 3, 4), (2, 4, 1))
"""(prompt, chosen, rejected) lengths of the probe: unequal, so a mask that is not applied shows."""


def _probe_lengths(config: Any, max_length: int) -> tuple[tuple[int, int, int], ...]:
    """The probe's pairs; with a sliding window shorter than max_length (where it cuts), also a pair whose
    completions lie past the window, so a window the mask does not apply shows. The config's raw
    `sliding_window` decides, not `attention.sliding_window`: the probe checks that reading of the config."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window >= max_length:
        return PROBE_PAIRS
    return (*PROBE_PAIRS, (window, 3, 2))


@torch.no_grad()
def packing_unsupported(model: nn.Module, *, pad_token_id: int, max_length: int = 64) -> str | None:
    """Why packed batches would not give this model the padded batches' log-probs, or None if they do.

    A probe, not a list of names: random pairs are scored packed and padded, and must agree. Attention that
    ignores a custom 4D mask (some kernels only know causal or padding masks) fails it, as does a sliding
    window the packed mask would leave out."""
    causal_lm = causal_lm_of(model)
    implementation = getattr(causal_lm.config, "_attn_implementation", None)
    if unknown := unmaskable_layer_types(causal_lm.config):
        return f"its layer types {unknown} have attention rules a packed mask does not reproduce"
    embeddings = causal_lm.get_input_embeddings()  # type: ignore[operator]
    device, dtype = embeddings.weight.device, embeddings.weight.dtype
    generator = torch.Generator().manual_seed(0)
    probe = _probe_lengths(causal_lm.config, max_length)
    prompt, chosen, rejected = (
        [torch.randint(3, embeddings.num_embeddings, (n,), generator=generator).tolist() for n in lengths]
        for lengths in zip(*probe, strict=True)
    )
    pairs = [TokenizedPair(i, *ids) for i, ids in enumerate(zip(prompt, chosen, rejected, strict=True))]
    length = max(64, max(sum(lengths) for lengths in probe))
    [packed] = pack(
        pairs,
        max_length=length,
        truncation_mode=TruncationMode.keep_start,
        token_budget=2 * length * len(pairs),
    )
    padded = collate(
        pairs, pad_token_id=pad_token_id, max_length=length, truncation_mode=TruncationMode.keep_start
    )
    was_training = model.training
    model.eval()
    try:
        got = packed_logps(model, packed.to(device)).logps
        want = sequence_logps(
            model, *(t.to(device) for t in (padded.input_ids, padded.attention_mask, padded.completion_mask))
        ).logps
    except Exception as exc:
        return (
            f"attention implementation {implementation!r} cannot take a packed batch "
            f"({type(exc).__name__}: {exc})"
        )
    finally:
        model.train(was_training)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    error = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
    if not error <= tolerance:
        return (
            f"attention implementation {implementation!r} does not apply a custom 4D attention mask "
            f"(packed log-probs differ from padded by {error:.2e} relative)"
        )
    return None
