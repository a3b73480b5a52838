"""Which attention kernel runs packed rows: SDPA with a dense (L × L) mask, or FlexAttention with a BlockMask.

Both apply the same rule (`packing.allowed`). A dense mask costs L² memory and compute whatever the row
holds; a BlockMask skips the blocks no query may see (other segments, chosen for rejected), which matters
for long rows on a GPU. `ALIGND_TRAINER_ATTENTION` chooses: `auto` (default), `sdpa` or `flex`.

`auto` is SDPA on CPU and FlexAttention on CUDA when this PyTorch has it. On CPU, FlexAttention cannot
train: PyTorch 2.13 has no FlexAttention backward on CPU ("does not support backward on CPU"), and its
compiled CPU kernel fails to build once a second row length makes the compiler go dynamic (measured; see
bench/README.md). `flex` on CPU therefore falls back to SDPA with a warning. The CUDA route is untested
here (no GPU on the development box); the start-up probe (`model.packing_unsupported`) still checks it
against padded batches on the first run, and a failure falls back to SDPA.

flash-attn varlen kernels are not used: they take block-diagonal causal segments only (cu_seqlens), which
cannot say "rejected sees the prompt but not chosen" without laying the prompt out twice.
"""

from collections.abc import Mapping
from enum import StrEnum

import torch

from alignd_trainer.errors import BadInputError

ENV = "ALIGND_TRAINER_ATTENTION"
FLEX = "flex_attention"
"""transformers' name for its FlexAttention implementation (`config._attn_implementation`)."""
SDPA = "sdpa"


class Attention(StrEnum):
    auto = "auto"
    sdpa = "sdpa"
    flex = "flex"


def attention_from_env(environ: Mapping[str, str]) -> Attention:
    value = environ.get(ENV, "").strip().lower() or Attention.auto.value
    try:
        return Attention(value)
    except ValueError:
        choices = ", ".join(a.value for a in Attention)
        raise BadInputError(f"{ENV}={value!r} is not one of {choices}") from None


def flex_available() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def choose_attention(requested: Attention, device: torch.device) -> tuple[str, str | None]:
    """(transformers attention implementation for packed rows, why `flex` was asked for and not given)."""
    if requested is Attention.sdpa:
        return SDPA, None
    if device.type != "cuda":
        why = (
            "FlexAttention cannot train on CPU (PyTorch has no FlexAttention backward there); "
            "packed rows use SDPA with a dense mask"
        )
        return SDPA, why if requested is Attention.flex else None
    if not flex_available():
        why = f"this PyTorch ({torch.__version__}) has no torch.nn.attention.flex_attention; using SDPA"
        return SDPA, why if requested is Attention.flex else None
    return FLEX, None
