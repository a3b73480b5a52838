"""The DPO family of losses as pure functions of sequence log-probs.

Every function takes a `PairLogps` (policy and reference log π(y|x) for chosen and rejected,
each of shape (B,), plus completion token counts) and returns per-example losses of shape (B,).
No reduction, logging or model calls happen here. Formulas follow TRL 1.16's DPOTrainer so
results compare one to one.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignd.contract import LossType


@dataclass(frozen=True)
class PairLogps:
    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor

    @property
    def chosen_logratios(self) -> torch.Tensor:
        return self.policy_chosen - self.ref_chosen

    @property
    def rejected_logratios(self) -> torch.Tensor:
        return self.policy_rejected - self.ref_rejected

    @property
    def delta(self) -> torch.Tensor:
        return self.chosen_logratios - self.rejected_logratios


@dataclass(frozen=True)
class LossOutput:
    losses: torch.Tensor
    """Weighted sum over the configured losses, per example (B,); its mean is the step loss."""
    chosen_rewards: torch.Tensor
    """β·(log π(y_w|x) − log π_ref(y_w|x)), detached."""
    rejected_rewards: torch.Tensor


LossFn = Callable[[PairLogps, float, float], torch.Tensor]


def sigmoid_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """−log σ(β·Δ), Δ = chosen log-ratio − rejected log-ratio (Rafailov et al. 2023, DPO)."""
    return -F.logsigmoid(beta * x.delta)


def hinge_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """max(0, 1 − β·Δ) (SLiC, Zhao et al. 2023)."""
    return torch.relu(1 - beta * x.delta)


def ipo_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """(Δ̄ − 1/(2β))², Δ̄ using per-token averaged log-ratios (Azar et al. 2023, IPO eq. 17)."""
    chosen = x.chosen_logratios / x.chosen_tokens.clamp(min=1)
    rejected = x.rejected_logratios / x.rejected_tokens.clamp(min=1)
    return (chosen - rejected - 1 / (2 * beta)) ** 2


def robust_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """[−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1−2ε): unbiased under label noise ε (Chowdhury et al. 2024)."""
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * x.delta)
    flipped = -label_smoothing * F.logsigmoid(-beta * x.delta)
    return (clean - flipped) / (1 - 2 * label_smoothing)


def bco_pair_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """−log σ(β·r_w) − log σ(−β·r_l), r = log-ratio (BCO, Jung et al. 2024, paired form)."""
    return -F.logsigmoid(beta * x.chosen_logratios) - F.logsigmoid(-beta * x.rejected_logratios)


def sppo_hard_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """(r_w − 1/(2β))² + (r_l + 1/(2β))² (SPPO with hard win probabilities, Wu et al. 2024)."""
    return (x.chosen_logratios - 0.5 / beta) ** 2 + (x.rejected_logratios + 0.5 / beta) ** 2


def apo_zero_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """1 − σ(β·r_w) + σ(β·r_l): raise chosen, lower rejected (APO-zero, D'Oosterlinck et al. 2024, eq. 7)."""
    return 1 - torch.sigmoid(beta * x.chosen_logratios) + torch.sigmoid(beta * x.rejected_logratios)


def apo_down_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """σ(β·r_w) + 1 − σ(β·Δ): lower both, rejected more (APO-down, eq. 8)."""
    return torch.sigmoid(beta * x.chosen_logratios) + 1 - torch.sigmoid(beta * x.delta)


def sft_loss(x: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """Mean negative log-likelihood per chosen token over the batch, repeated per example."""
    nll = -x.policy_chosen.sum() / x.chosen_tokens.sum().clamp(min=1)
    return nll.expand(x.policy_chosen.shape[0])


def supervised_token_losses(logps: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Cross-entropy on trained assistant tokens, per sequence: −log π(y_i|x_i) / N, where log π(y_i|x_i)
    sums the log-probs of row i's trained tokens and N counts the trained tokens of the whole (global)
    batch. Their sum is the batch's mean negative log-likelihood per trained token, as TRL's SFTTrainer
    and transformers' Trainer reduce it (every token counts once, whichever row it is in).
    `logps` (B,), N ≥ 1; returns (B,)."""
    return -logps / max(total_tokens, 1)


LOSSES: dict[LossType, LossFn] = {
    LossType.sigmoid: sigmoid_loss,
    LossType.hinge: hinge_loss,
    LossType.ipo: ipo_loss,
    LossType.robust: robust_loss,
    LossType.bco_pair: bco_pair_loss,
    LossType.sppo_hard: sppo_hard_loss,
    LossType.apo_zero: apo_zero_loss,
    LossType.apo_down: apo_down_loss,
    LossType.sft: sft_loss,
}


def preference_loss(
    x: PairLogps,
    *,
    loss_types: Sequence[LossType],
    weights: Sequence[float],
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Weighted combination of the configured losses, plus the implicit rewards TRL logs."""
    losses = sum(
        (
            LOSSES[name](x, beta, label_smoothing) * weight
            for name, weight in zip(loss_types, weights, strict=True)
        ),
        start=torch.zeros_like(x.policy_chosen),
    )
    return LossOutput(
        losses=losses,
        chosen_rewards=(beta * x.chosen_logratios).detach(),
        rejected_rewards=(beta * x.rejected_logratios).detach(),
    )
