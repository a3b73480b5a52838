"""Which attention kernel runs packed rows: SDPA with a dense (L × L) mask, FlexAttention with a BlockMask,
or a varlen (flash) kernel with no mask (`alignd_trainer.varlen`).

All apply the same rule (`packing.allowed`). A dense mask costs L² memory and compute whatever the row
holds; a BlockMask skips the blocks no query may see (other segments, chosen for rejected); varlen runs each
branch as a sequence of its own and gathers the prompt's keys twice, with no mask and no compilation.
`ALIGND_TRAINER_ATTENTION` chooses: `auto` (default), `sdpa`, `flex` or `varlen`.

`auto` is SDPA on CPU; on CUDA, varlen where this PyTorch has `torch.nn.attention.varlen`, else
FlexAttention, else SDPA. On CPU neither can train: PyTorch 2.13 has no FlexAttention backward there ("does
not support backward on CPU"; its compiled CPU kernel also fails to build once a second row length makes
the compiler go dynamic, see bench/README.md) and its varlen kernel is CUDA-only, so asking for either on
CPU falls back to SDPA with a warning. The CUDA routes are untested here (no GPU on the development box);
the start-up probe (`model.packing_unsupported`) checks the chosen one against padded batches, and a
failure falls back to SDPA.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from alignd.contract import ATTENTION_ENV, AttentionKernel
from alignd_trainer.errors import BadInputError
from alignd_trainer.packing import PackedBatch
from alignd_trainer.varlen import LAYOUT, VARLEN, cuda_varlen_available

FLEX = "flex_attention"
"""transformers' name for its FlexAttention implementation (`config._attn_implementation`)."""
SDPA = "sdpa"
FULL, SLIDING = "full_attention", "sliding_attention"
"""transformers' layer types (`config.layer_types`) that packed rows can mask."""

Mask = TypeVar("Mask")


def attention_from_env(environ: Mapping[str, str]) -> AttentionKernel:
    value = environ.get(ATTENTION_ENV, "").strip().lower() or AttentionKernel.auto.value
    try:
        return AttentionKernel(value)
    except ValueError:
        choices = ", ".join(a.value for a in AttentionKernel)
        raise BadInputError(f"{ATTENTION_ENV}={value!r} is not one of {choices}") from None


def flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(requested: AttentionKernel, device: torch.device) -> tuple[str, str | None]:
    """(transformers attention implementation for packed rows, why the kernel asked for is not given)."""
    if requested is AttentionKernel.sdpa:
        return SDPA, None
    if device.type != "cuda":
        why = {
            AttentionKernel.flex: "FlexAttention cannot train on CPU (PyTorch has no backward for it there)",
            AttentionKernel.varlen: "varlen (flash) attention runs on CUDA only",
        }.get(requested)
        return SDPA, None if why is None else f"{why}; packed rows use SDPA with a dense mask"
    available = {AttentionKernel.varlen: cuda_varlen_available(), AttentionKernel.flex: flex_available()}
    kernels = {AttentionKernel.varlen: VARLEN, AttentionKernel.flex: FLEX}
    if requested is AttentionKernel.auto:
        first = next((a for a in (AttentionKernel.varlen, AttentionKernel.flex) if available[a]), None)
        return (SDPA, None) if first is None else (kernels[first], None)
    if not available[requested]:
        module = (
            "torch.nn.attention.varlen"
            if requested is AttentionKernel.varlen
            else "torch.nn.attention.flex_attention"
        )
        return SDPA, f"this PyTorch ({torch.__version__}) has no {module}; using SDPA"
    return kernels[requested], None


def packed_attention_inputs(config: Any, batch: PackedBatch, dtype: torch.dtype) -> dict[str, Any]:
    """What the model's forward takes, beside ids and positions, to attend by the packed rule with the
    attention implementation it is set to."""
    implementation = getattr(config, "_attn_implementation", None)
    if implementation == FLEX:
        return {"attention_mask": per_layer_type(config, batch.block_mask)}
    if implementation == VARLEN:
        return {"attention_mask": None, LAYOUT: batch.varlen_layout}
    return {"attention_mask": per_layer_type(config, lambda window: batch.attention_bias(dtype, window))}


def sliding_window(config: Any) -> int | None:
    """The window of the model's sliding-window layers (keys fewer than this many positions back), or None
    when every layer attends to the whole prefix."""
    window = getattr(config, "sliding_window", None)
    if window is None or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and SLIDING not in layer_types:
        return None
    return int(window)


def unmaskable_layer_types(config: Any) -> list[str]:
    """Layer types whose attention rule packed rows cannot reproduce (chunked, linear, ...)."""
    return sorted(set(getattr(config, "layer_types", None) or ()) - {FULL, SLIDING})


def per_layer_type(config: Any, mask: Callable[[int | None], Mask]) -> Mask | dict[str, Mask]:
    """A packed row's mask as the model takes it, from `mask(window)`: one for every layer, or, when the
    model mixes full and sliding-window layers, transformers' {layer type: mask} mapping. A custom 4D mask
    is used as given, so the window must be in it."""
    window = sliding_window(config)
    layer_types = getattr(config, "layer_types", None)
    if window is None or layer_types is None:
        return mask(window)
    return {kind: mask(window if kind == SLIDING else None) for kind in sorted(set(layer_types))}
