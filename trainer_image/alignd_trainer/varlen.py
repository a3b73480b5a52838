"""Packed rows through variable-length (flash) attention, with no mask at all.

A varlen kernel attends within sequences given by cumulative lengths, causally. A shared pair becomes two
query sequences: `prompt | chosen`, attending to itself, and `rejected`, attending to `prompt | rejected`
(the prompt's keys and values gathered a second time; its queries, and so its projections and MLP, still
run once). When a sequence has more keys than queries, flash kernels align the causal mask to the bottom
right, so rejected query i sees the prompt and rejected keys up to its own: exactly `packing.allowed`.
An unshared pair (keep_end with different prompt tails) is two plain causal sequences.

On CUDA the kernel is PyTorch's own (`torch.nn.attention.varlen.varlen_attn`, Flash Attention; bf16/fp16
only); anywhere else, and in the tests, `reference_varlen` computes the same thing sequence by sequence
with SDPA, so the layout, the gathers and the window are checked on CPU. The CUDA kernel itself has not
run here (no GPU on the development box): the trainer's start-up probe checks it against padded batches.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface

from alignd_trainer.packing import CHOSEN, REJECTED, SHARED

VARLEN = "alignd_varlen"
"""The name of this attention implementation in transformers' registry (`config._attn_implementation`)."""
LAYOUT = "alignd_varlen_layout"
"""The keyword that carries a row's `VarlenLayout` from the model's forward to every attention layer."""


@dataclass(frozen=True)
class VarlenLayout:
    """One packed row as varlen sequences: which row tokens are each sequence's queries and keys."""

    query_index: torch.Tensor
    """(L,) the row offsets of the queries, sequence after sequence (every token once)."""
    key_index: torch.Tensor
    """(Tk,) the row offsets of the keys and values, sequence after sequence (shared prompts twice)."""
    restore: torch.Tensor
    """(L,) for each row offset, where its query sits in `query_index` (to put outputs back in row order)."""
    query_lengths: list[int]
    key_lengths: list[int]
    cu_q: torch.Tensor
    """(N + 1,) int32 cumulative query lengths, as varlen kernels take them."""
    cu_k: torch.Tensor


def _cumulative(lengths: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor([0, *lengths], dtype=torch.int32, device=device).cumsum(0, dtype=torch.int32)


def varlen_layout(segment_ids: Sequence[int], branches: Sequence[int], device: torch.device) -> VarlenLayout:
    """The sequences of one packed row (`PackedBatch.segment_ids[0]`, `branch_ids[0]`)."""
    queries: list[list[int]] = []
    keys: list[list[int]] = []
    offset = 0
    for _, run in groupby(segment_ids):
        part = range(offset, offset + len(list(run)))
        offset = part.stop
        shared = [i for i in part if branches[i] == SHARED]
        first = shared + [i for i in part if branches[i] == CHOSEN]
        rejected = [i for i in part if branches[i] == REJECTED]
        for query, key in ((first, first), (rejected, shared + rejected)):
            if query:
                queries.append(query)
                keys.append(key)
    query_index = torch.tensor([i for q in queries for i in q], dtype=torch.long, device=device)
    query_lengths, key_lengths = [len(q) for q in queries], [len(k) for k in keys]
    return VarlenLayout(
        query_index=query_index,
        key_index=torch.tensor([i for k in keys for i in k], dtype=torch.long, device=device),
        restore=torch.argsort(query_index),
        query_lengths=query_lengths,
        key_lengths=key_lengths,
        cu_q=_cumulative(query_lengths, device),
        cu_k=_cumulative(key_lengths, device),
    )


def reference_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: VarlenLayout,
    *,
    scale: float | None,
    window: int | None,
) -> torch.Tensor:
    """(Tq, H, D) varlen attention, bottom-right causal, sequence by sequence with SDPA (any device)."""
    outputs = []
    q_start = k_start = 0
    for q_len, k_len in zip(layout.query_lengths, layout.key_lengths, strict=True):
        keys = slice(k_start, k_start + k_len)
        mask = _bottom_right_causal(q_len, k_len, window, q.device)
        out = F.scaled_dot_product_attention(
            _heads_first(q[q_start : q_start + q_len]),
            _heads_first(k[keys]),
            _heads_first(v[keys]),
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=True,
        )
        outputs.append(out[0].transpose(0, 1))
        q_start, k_start = q_start + q_len, k_start + k_len
    return torch.cat(outputs)


def _bottom_right_causal(
    q_len: int, k_len: int, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """The (q_len, k_len) mask of a sequence whose queries are its last q_len keys, or None where SDPA's own
    causal rule (top left, the faster kernel path) is the same: as many queries as keys and no window."""
    if q_len == k_len and window is None:
        return None
    rows = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
    cols = torch.arange(k_len, device=device)[None, :]
    visible = cols <= rows
    if window is not None:
        visible &= rows - cols < window
    return visible


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    """(T, H, D) -> (1, H, T, D), as SDPA takes it."""
    return t.transpose(0, 1)[None]


def cuda_varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _kernel(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: VarlenLayout,
    *,
    scale: float | None,
    window: int | None,
) -> torch.Tensor:
    if not (q.is_cuda and cuda_varlen_available()):
        return reference_varlen(q, k, v, layout, scale=scale, window=window)
    from torch.nn.attention.varlen import varlen_attn

    out = varlen_attn(
        q,
        k,
        v,
        layout.cu_q,
        layout.cu_k,
        max(layout.query_lengths),
        max(layout.key_lengths),
        scale=scale,
        window_size=(-1 if window is None else window - 1, 0),
        enable_gqa=k.shape[1] != q.shape[1],
    )
    assert isinstance(out, torch.Tensor)
    return out


def varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (1, H, L, D) query, (1, Hkv, L, D) key and value in, (1, L, H, D)
    out. The row's layout comes as the `LAYOUT` keyword; the trainer disables dropout, so none is applied."""
    layout = kwargs.get(LAYOUT)
    if not isinstance(layout, VarlenLayout) or query.shape[0] != 1:
        raise ValueError(f"{VARLEN} attention runs one packed row with its {LAYOUT}=VarlenLayout")

    def tokens(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return t[0].transpose(0, 1)[index]

    out = _kernel(
        tokens(query, layout.query_index),
        tokens(key, layout.key_index),
        tokens(value, layout.key_index),
        layout,
        scale=scaling,
        window=sliding_window,
    )
    return out[layout.restore][None], None


AttentionInterface.register(VARLEN, varlen_attention_forward)
