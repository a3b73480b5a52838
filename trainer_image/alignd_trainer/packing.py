"""Prompt-shared, padding-free batches.

A pair becomes one segment `prompt | chosen | rejected`: the prompt runs once, chosen tokens see
the prompt and earlier chosen tokens, rejected tokens see the prompt and earlier rejected tokens
(never chosen), and rejected position ids continue from the end of the prompt, so every token
sees exactly what it sees in its own padded row. Segments are packed into rows of at most a token
budget, each attending only within itself. A row is a micro-batch of its own (forward, loss and
backward), so rows never wait on padding to a common width and attention costs what its row holds.

Truncation is the padded path's, per sequence. When keep_end leaves the two sequences different
prompt tails, the pair is laid out as two plain causal segments instead, so it stays exact.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from alignd.contract import TruncationMode
from alignd_trainer.data import TokenizedPair, truncate_sequence

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

    from alignd_trainer.varlen import VarlenLayout

T = TypeVar("T")

SHARED, CHOSEN, REJECTED = 0, 1, 2
"""Branch of a token: the shared prompt, or the chosen or rejected completion."""


@dataclass(frozen=True)
class Segment:
    """One pair laid out for packing; `scored` holds (predicting offset, target id, side), side 0 for
    a chosen token and 1 for a rejected one."""

    ids: list[int]
    positions: list[int]
    branches: list[int]
    parts: list[int]
    """Tokens attend only within their part (a shared pair has one part, an unshared pair two)."""
    scored: list[tuple[int, int, int]]
    unpacked_tokens: int
    """Tokens of the pair's two padded rows, prompt counted in both: what throughput counts."""

    def __len__(self) -> int:
        return len(self.ids)


def _split(ids: list[int], mask: list[int]) -> tuple[list[int], list[int]]:
    prompt_len = mask.index(1) if 1 in mask else len(mask)
    return ids[:prompt_len], ids[prompt_len:]


def _score(completion_start: int, previous_of_first: int, length: int) -> list[tuple[int, int]]:
    """(offset of the predicting token, offset of the target) for each completion token."""
    out = []
    for k in range(length):
        source = previous_of_first if k == 0 else completion_start + k - 1
        if source >= 0:
            out.append((source, completion_start + k))
    return out


def layout_pair(pair: TokenizedPair, *, max_length: int, truncation_mode: TruncationMode) -> Segment:
    sequences = []
    for completion in (pair.chosen_ids, pair.rejected_ids):
        ids = pair.prompt_ids + completion
        mask = [0] * len(pair.prompt_ids) + [1] * len(completion)
        sequences.append(truncate_sequence(ids, mask, max_length, truncation_mode))
    (chosen_prompt, chosen), (rejected_prompt, rejected) = (_split(*s) for s in sequences)
    unpacked = len(sequences[0][0]) + len(sequences[1][0])
    if chosen_prompt == rejected_prompt:
        p, c = len(chosen_prompt), len(chosen)
        ids = chosen_prompt + chosen + rejected
        positions = list(range(p + c)) + list(range(p, p + len(rejected)))
        branches = [SHARED] * p + [CHOSEN] * c + [REJECTED] * len(rejected)
        parts = [0] * len(ids)
        pairs_scored = [
            (_score(p, p - 1, c), 0),
            (_score(p + c, p - 1, len(rejected)), 1),
        ]
    else:
        ids, positions, branches, parts, pairs_scored = [], [], [], [], []
        for part, (prompt, completion) in enumerate(((chosen_prompt, chosen), (rejected_prompt, rejected))):
            start = len(ids)
            sequence = prompt + completion
            ids += sequence
            positions += list(range(len(sequence)))
            branches += [SHARED] * len(sequence)
            parts += [part] * len(sequence)
            first = start + len(prompt)
            pairs_scored.append((_score(first, first - 1 if prompt else -1, len(completion)), part))
    scored = [(source, ids[target], side) for spans, side in pairs_scored for source, target in spans]
    return Segment(ids, positions, branches, parts, scored, unpacked)


@dataclass(frozen=True)
class PackedBatch:
    """Segments packed into one row; log-probs come out as the padded `Batch`'s: chosen, then rejected."""

    input_ids: torch.Tensor
    """(1, L) token ids of one row, no padding."""
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    """(1, L) segment (part) of each token; tokens attend only within their segment."""
    branch_ids: torch.Tensor
    score_sources: torch.Tensor
    """(N,) for each scored token: the offset of the token that predicts it, the target id and the output
    sequence (chosen of pair i → i, rejected → B + i, for the batch's B pairs)."""
    score_targets: torch.Tensor
    score_outputs: torch.Tensor
    weights: torch.Tensor
    indices: list[int]
    num_tokens: int
    """Tokens the padded batch would hold without padding (the prompt counted in both rows)."""
    _masks: dict[tuple[object, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    """The row's masks by (kind, dtype or None, window), built once: the policy and reference forwards share
    them."""

    @property
    def pairs(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> "PackedBatch":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return PackedBatch(
            move(self.input_ids),
            move(self.position_ids),
            move(self.segment_ids),
            move(self.branch_ids),
            move(self.score_sources),
            move(self.score_targets),
            move(self.score_outputs),
            move(self.weights),
            self.indices,
            self.num_tokens,
        )

    def attention_bias(self, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
        """(1, 1, L, L) additive mask for SDPA and eager attention: 0 where `allowed`, the dtype's minimum
        elsewhere."""
        return self._memo(("bias", dtype, window), lambda: self._new_bias(dtype, window))

    def block_mask(self, window: int | None = None) -> "BlockMask":
        """The same rule as a FlexAttention BlockMask: blocks no query may see are skipped, not masked."""
        return self._memo(("block", None, window), lambda: self._new_block_mask(window))

    @cached_property
    def varlen_layout(self) -> "VarlenLayout":
        """The row as varlen sequences (`alignd_trainer.varlen`)."""
        from alignd_trainer.varlen import varlen_layout

        return varlen_layout(self.segment_ids[0].tolist(), self.branch_ids[0].tolist(), self.input_ids.device)

    def _memo(self, key: tuple[object, ...], build: Callable[[], T]) -> T:
        if key not in self._masks:
            self._masks[key] = build()
        return cast(T, self._masks[key])

    def _new_bias(self, dtype: torch.dtype, window: int | None) -> torch.Tensor:
        index = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        rule = allowed(
            self.segment_ids[0],
            self.branch_ids[0],
            index[:, None],
            index[None, :],
            self.position_ids[0],
            window,
        )
        bias = torch.zeros(rule.shape, dtype=dtype, device=rule.device)
        bias.masked_fill_(~rule, torch.finfo(dtype).min)
        return bias[None, None]

    def _new_block_mask(self, window: int | None) -> "BlockMask":
        from torch.nn.attention.flex_attention import create_block_mask

        segments, branches, positions = self.segment_ids[0], self.branch_ids[0], self.position_ids[0]

        def mask_mod(_b: torch.Tensor, _h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return allowed(segments, branches, q, kv, positions, window)

        length = self.input_ids.shape[1]
        return create_block_mask(mask_mod, 1, None, length, length, device=self.input_ids.device)


def allowed(
    segments: torch.Tensor,
    branches: torch.Tensor,
    q: torch.Tensor,
    kv: torch.Tensor,
    positions: torch.Tensor,
    window: int | None = None,
) -> torch.Tensor:
    """Whether query token `q` may attend to key token `kv` of one packed row (indices broadcast): causal,
    within one segment, and a key on another branch than the query's only when it is the shared prompt.
    With a sliding `window`, also only keys fewer than `window` positions back (transformers' rule), counted
    in position ids: a rejected token is as far from the prompt as in its own padded row."""
    visible_branch = (branches[kv] == SHARED) | (branches[kv] == branches[q])
    rule = (kv <= q) & (segments[q] == segments[kv]) & visible_branch
    if window is not None:
        rule = rule & (positions[q] - positions[kv] < window)
    return rule


def _bins(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """First-fit decreasing: segment indices per row, no row over the budget unless one segment is."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(budget - lengths[i])
    return rows


def _row(segments: Sequence[Segment], pairs: Sequence[TokenizedPair]) -> PackedBatch:
    ids: list[int] = []
    positions: list[int] = []
    segment_ids: list[int] = []
    branches: list[int] = []
    scored: list[tuple[int, int, int]] = []
    for n, s in enumerate(segments):
        offset = len(ids)
        ids += s.ids
        positions += s.positions
        segment_ids += [2 * n + part for part in s.parts]
        branches += s.branches
        scored += [(offset + source, target, side * len(segments) + n) for source, target, side in s.scored]
    score = torch.tensor(scored, dtype=torch.long).reshape(-1, 3)
    return PackedBatch(
        torch.tensor([ids]),
        torch.tensor([positions]),
        torch.tensor([segment_ids]),
        torch.tensor([branches]),
        score[:, 0].contiguous(),
        score[:, 1].contiguous(),
        score[:, 2].contiguous(),
        torch.tensor([p.weight for p in pairs], dtype=torch.float32),
        [p.index for p in pairs],
        sum(s.unpacked_tokens for s in segments),
    )


def pack(
    pairs: Sequence[TokenizedPair],
    *,
    max_length: int,
    truncation_mode: TruncationMode,
    token_budget: int,
) -> list[PackedBatch]:
    """The pairs as padding-free rows of at most `token_budget` tokens (a longer pair gets a row of its
    own), each row a batch of its own pairs: run, score and backpropagate one row at a time."""
    segments = [layout_pair(p, max_length=max_length, truncation_mode=truncation_mode) for p in pairs]
    rows = [sorted(row) for row in _bins([len(s) for s in segments], token_budget)]
    return [_row([segments[i] for i in row], [pairs[i] for i in row]) for row in rows]


def token_budget(max_length: int) -> int:
    """Tokens per packed row: room for the longest possible segment (a pair whose prompt and two
    completions are each cut at max_length shares nothing and takes two sequences' room)."""
    return 2 * max_length
