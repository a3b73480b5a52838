"""Per-sequence log-probabilities: log π(y|x) = Σ over completion tokens of log p(token | prefix).

The LM head is applied only at completion positions, in chunks, with fp32 logits (a bf16 head
multiplies in bf16 with fp32 accumulation and output on CUDA, never as an fp32 copy). What the
backward needs is formed in the forward when it is small (a frozen head's d logp/dh, or a trained
head's probabilities up to `KEEP_PROBS_BYTES`); otherwise the backward recomputes each chunk's
logits, so the (tokens × vocab) logits never exist for the whole batch at once.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alignd_trainer.attention import packed_attention_inputs
from alignd_trainer.data import Batch
from alignd_trainer.packing import PackedBatch

CHUNK_TOKENS = 1024


@dataclass(frozen=True)
class SequenceLogps:
    logps: torch.Tensor
    """(N,) fp32 sum of completion-token log-probs; differentiable."""
    tokens: torch.Tensor
    """(N,) completion token counts."""
    logits_sum: torch.Tensor
    """(N,) detached sum over completion tokens of the mean logit (TRL's logits/* metrics)."""


KEEP_PROBS_BYTES = 256 * 2**20
"""A trained head keeps the forward's probabilities for its backward when they take at most this much (fp32,
scored tokens × vocabulary); above it, the backward recomputes them chunk by chunk."""


class _ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(h·Wᵀ + b)[target] for each row of h, chunk by chunk.

    The backward takes one of three routes, by what needs a gradient:
    - only h (LoRA: the head is frozen): d logp/dh = W[target] − softmax·W is formed in the forward, one
      (tokens × hidden) row per token, and the backward only scales it;
    - W or b (full fine-tuning), with probabilities of at most `KEEP_PROBS_BYTES`: the forward keeps them and
      the backward turns them into the logits' gradient in place;
    - otherwise the backward recomputes each chunk's logits, so no (tokens × vocab) tensor outlives a chunk.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        trains_head = need_w or (need_b and bias is not None)
        ctx.direct = need_h and not trains_head
        keep = trains_head and 4 * hidden.shape[0] * weight.shape[0] <= KEEP_PROBS_BYTES
        kept: list[torch.Tensor] | None = [] if keep else None
        logps = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        mean_logits = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        lse = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        dlogp_dh = hidden.new_empty(hidden.shape, dtype=torch.float32) if ctx.direct else None
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            rows = slice(start, start + CHUNK_TOKENS)
            logits = _logits(hidden[rows], weight, bias)
            target_logits = logits.gather(1, target[rows, None]).squeeze(1)
            mean_logits[rows] = logits.mean(dim=-1)
            exps, totals, lse[rows] = _exp_in_place(logits)
            logps[rows] = target_logits - lse[rows]
            if dlogp_dh is None and kept is None:
                continue
            probs = exps.div_(totals)
            if dlogp_dh is not None:
                dlogp_dh[rows] = weight[target[rows]].float() - _mm32(probs, weight)
            elif kept is not None:
                kept.append(probs)
        if dlogp_dh is not None:
            ctx.save_for_backward(dlogp_dh)
        else:
            ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.kept = kept
        ctx.hidden_dtype = hidden.dtype
        ctx.mark_non_differentiable(mean_logits)
        return logps, mean_logits

    @staticmethod
    def backward(
        ctx: Any, grad_logps: torch.Tensor, _grad_mean: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        if ctx.direct:
            (dlogp_dh,) = ctx.saved_tensors
            return (grad_logps[:, None] * dlogp_dh).to(ctx.hidden_dtype), None, None, None
        hidden, weight, bias, target, lse = ctx.saved_tensors
        kept, ctx.kept = ctx.kept, None  # used up in place below; a second backward recomputes
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w: torch.Tensor | None = None
        grad_b: torch.Tensor | None = None
        for chunk, start in enumerate(range(0, hidden.shape[0], CHUNK_TOKENS)):
            rows = slice(start, start + CHUNK_TOKENS)
            if kept is not None:
                probs = kept[chunk]
            else:
                probs = _logits(hidden[rows], weight, bias).sub_(lse[rows, None]).exp_()
            # d logp[target] / d logits = onehot(target) − softmax
            grad_logits = probs.mul_(-grad_logps[rows, None])
            grad_logits.scatter_add_(1, target[rows, None], grad_logps[rows, None])
            if grad_h is not None:
                grad_h[rows] = _mm32(grad_logits, weight).to(hidden.dtype)
            if need_w:
                grad_w = _add_product(grad_w, grad_logits.T, hidden[rows].float())
            if need_b and bias is not None:
                grad_b = grad_logits.sum(dim=0) if grad_b is None else grad_b.add_(grad_logits.sum(dim=0))
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None or bias is None else grad_b.to(bias.dtype),
            None,
        )


def _exp_in_place(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turns each row of `logits` into exp(logit − row max) in place; returns it, its row sums and the rows'
    log-sum-exp. `torch.logsumexp` would allocate two (tokens × vocab) temporaries per chunk; on CPU each is a
    fresh mapping whose pages fault in one by one."""
    top = logits.amax(dim=-1, keepdim=True)
    exps = logits.sub_(top).exp_()
    totals = exps.sum(dim=-1, keepdim=True)
    return exps, totals, (top + totals.log()).squeeze(1)


def _add_product(total: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """total + a @ b, accumulated in place; the first product is the total (no zero-filled start: a head's
    gradient is vocabulary × hidden, and filling it costs as much as a chunk's matmul)."""
    return a @ b if total is None else total.addmm_(a, b)


def _mm32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result and fp32 accumulation, without an fp32 copy of a half-precision `b`
    where the device has a mixed-precision matmul (CUDA: bf16/fp16 operands, fp32 output)."""
    with torch.autocast(device_type=a.device.type, enabled=False):
        if b.dtype == torch.float32:
            return a.float() @ b
        if a.device.type == "cuda":
            return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32)
        return a.float() @ b.float()


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = _mm32(hidden, weight.T)
    return logits if bias is None else logits + bias.float()


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _plain_linear_head(causal_lm: nn.Module) -> bool:
    """True when logits are exactly hidden·Wᵀ(+b): no softcapping or logit scaling to reproduce."""
    config = getattr(causal_lm, "config", None)
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            return False
    return isinstance(causal_lm.get_output_embeddings(), nn.Linear)  # type: ignore[operator]


def _token_logps(
    causal_lm: nn.Module, hidden_or_logits: torch.Tensor, target: torch.Tensor, *, plain_head: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per scored token: log p(target) and the mean logit, from hidden states (plain head) or logits."""
    if plain_head:
        head = causal_lm.get_output_embeddings()  # type: ignore[operator]
        logps, mean = _ChunkedTokenLogps.apply(hidden_or_logits, head.weight, head.bias, target)
        return logps, mean
    selected = hidden_or_logits.float()
    return selected.log_softmax(-1).gather(1, target[:, None]).squeeze(1), selected.detach().mean(-1)


def _run(causal_lm: nn.Module, plain_head: bool, **inputs: Any) -> torch.Tensor:
    """Last hidden states when the head is applied here, else the model's logits."""
    if plain_head:
        backbone = getattr(causal_lm, str(causal_lm.base_model_prefix))
        return backbone(**inputs, use_cache=False).last_hidden_state
    return causal_lm(**inputs, use_cache=False).logits


def _sums(
    n: int, outputs: torch.Tensor, token_logps: torch.Tensor, token_mean: torch.Tensor
) -> SequenceLogps:
    zeros = torch.zeros(n, dtype=torch.float32, device=outputs.device)
    return SequenceLogps(
        logps=zeros.index_add(0, outputs, token_logps),
        tokens=torch.zeros(n, dtype=torch.long, device=outputs.device).index_add(
            0, outputs, torch.ones_like(outputs)
        ),
        logits_sum=zeros.index_add(0, outputs, token_mean.detach()),
    )


def sequence_logps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> SequenceLogps:
    """Padded rows: row i's log-prob sums the completion tokens of row i."""
    causal_lm = causal_lm_of(model)
    plain = _plain_linear_head(causal_lm)
    mask = completion_mask[:, 1:].bool()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(mask)[mask]
    out = _run(causal_lm, plain, input_ids=input_ids, attention_mask=attention_mask)
    token_logps, token_mean = _token_logps(
        causal_lm, out[:, :-1][mask], input_ids[:, 1:][mask], plain_head=plain
    )
    return _sums(input_ids.shape[0], rows, token_logps, token_mean)


def packed_logps(model: nn.Module, batch: PackedBatch) -> SequenceLogps:
    """Prompt-shared, packed rows: the padded batch's per-sequence log-probs, chosen then rejected."""
    causal_lm = causal_lm_of(model)
    plain = _plain_linear_head(causal_lm)
    dtype = causal_lm.get_input_embeddings().weight.dtype  # type: ignore[operator]
    out = _run(
        causal_lm,
        plain,
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        **packed_attention_inputs(causal_lm.config, batch, dtype),
    )
    token_logps, token_mean = _token_logps(
        causal_lm, out[0, batch.score_sources], batch.score_targets, plain_head=plain
    )
    return _sums(2 * batch.pairs, batch.score_outputs, token_logps, token_mean)


def batch_logps(model: nn.Module, batch: Batch | PackedBatch) -> SequenceLogps:
    if isinstance(batch, PackedBatch):
        return packed_logps(model, batch)
    return sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)


class SequenceScorer(nn.Module):
    """Wraps a model so that DDP sees one forward: batch -> per-sequence log-probs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch | PackedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = batch_logps(self.model, batch)
        return out.logps, out.tokens, out.logits_sum
