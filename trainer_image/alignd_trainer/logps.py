"""Per-sequence log-probabilities: log π(y|x) = Σ over completion tokens of log p(token | prefix).

The LM head is applied only at completion positions, in chunks, in fp32 (even when the model
runs in bf16), and the backward pass recomputes each chunk's logits instead of keeping them:
the (tokens × vocab) logits never exist for the whole batch at once.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

CHUNK_TOKENS = 1024


@dataclass(frozen=True)
class SequenceLogps:
    logps: torch.Tensor
    """(N,) fp32 sum of completion-token log-probs; differentiable."""
    tokens: torch.Tensor
    """(N,) completion token counts."""
    logits_sum: torch.Tensor
    """(N,) detached sum over completion tokens of the mean logit (TRL's logits/* metrics)."""


class _ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(h·Wᵀ + b)[target] for each row of h, chunk by chunk, recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight32 = weight.float()
        bias32 = None if bias is None else bias.float()
        logps = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        mean_logits = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        lse = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            rows = slice(start, start + CHUNK_TOKENS)
            logits = _logits(hidden[rows], weight32, bias32)
            lse[rows] = torch.logsumexp(logits, dim=-1)
            logps[rows] = logits.gather(1, target[rows, None]).squeeze(1) - lse[rows]
            mean_logits[rows] = logits.mean(dim=-1)
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.mark_non_differentiable(mean_logits)
        return logps, mean_logits

    @staticmethod
    def backward(
        ctx: Any, grad_logps: torch.Tensor, _grad_mean: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None]:
        hidden, weight, bias, target, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        weight32 = weight.float()
        bias32 = None if bias is None else bias.float()
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight32) if need_w else None
        grad_b = torch.zeros_like(bias32) if need_b and bias32 is not None else None
        for start in range(0, hidden.shape[0], CHUNK_TOKENS):
            rows = slice(start, start + CHUNK_TOKENS)
            h = hidden[rows].float()
            probs = torch.exp(_logits(hidden[rows], weight32, bias32) - lse[rows, None])
            # d logp[target] / d logits = onehot(target) − softmax
            grad_logits = -probs * grad_logps[rows, None]
            grad_logits.scatter_add_(1, target[rows, None], grad_logps[rows, None])
            if grad_h is not None:
                grad_h[rows] = (grad_logits @ weight32).to(hidden.dtype)
            if grad_w is not None:
                grad_w.addmm_(grad_logits.T, h)
            if grad_b is not None:
                grad_b += grad_logits.sum(dim=0)
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
        )


def _logits(hidden: torch.Tensor, weight32: torch.Tensor, bias32: torch.Tensor | None) -> torch.Tensor:
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = hidden.float() @ weight32.T
        return logits if bias32 is None else logits + bias32


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


def sequence_logps(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> SequenceLogps:
    causal_lm = causal_lm_of(model)
    labels = input_ids[:, 1:]
    mask = completion_mask[:, 1:].bool()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(mask)[mask]
    target = labels[mask]
    if _plain_linear_head(causal_lm):
        backbone = getattr(causal_lm, str(causal_lm.base_model_prefix))
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        head = causal_lm.get_output_embeddings()  # type: ignore[operator]
        token_logps, token_mean = _ChunkedTokenLogps.apply(
            hidden[:, :-1][mask], head.weight, head.bias, target
        )
    else:
        logits = causal_lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        selected = logits[:, :-1][mask].float()
        token_logps = selected.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
        token_mean = selected.detach().mean(-1)
    n = input_ids.shape[0]
    zeros = torch.zeros(n, dtype=torch.float32, device=input_ids.device)
    return SequenceLogps(
        logps=zeros.index_add(0, rows, token_logps),
        tokens=mask.sum(dim=1),
        logits_sum=zeros.index_add(0, rows, token_mean.detach()),
    )


class SequenceScorer(nn.Module):
    """Wraps a model so that DDP sees one forward: batch -> per-sequence log-probs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = sequence_logps(self.model, input_ids, attention_mask, completion_mask)
        return out.logps, out.tokens, out.logits_sum
