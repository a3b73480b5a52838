"""Hand-computed checks of every DPO-family loss in `alignd_trainer.losses`.

All tests share one pair: β = 0.1, log π(y_w|x) = −10, log π(y_l|x) = −12, log π_ref(y_w|x) =
log π_ref(y_l|x) = −11. So the chosen log-ratio r_w = −10 − (−11) = 1, the rejected log-ratio
r_l = −12 − (−11) = −1, Δ = r_w − r_l = 2 and βΔ = 0.2. Inputs are float64 so the only error
left is the 6-decimal rounding of the hand results.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from alignd.contract import LossType
from alignd_trainer.losses import (
    LOSSES,
    PairLogps,
    apo_down_loss,
    apo_zero_loss,
    bco_pair_loss,
    hinge_loss,
    ipo_loss,
    preference_loss,
    robust_loss,
    sft_loss,
    sigmoid_loss,
    sppo_hard_loss,
)

BETA = 0.1
ATOL = 1e-6


def pair(
    policy_chosen: float = -10.0,
    policy_rejected: float = -12.0,
    ref_chosen: float = -11.0,
    ref_rejected: float = -11.0,
    chosen_tokens: int = 5,
    rejected_tokens: int = 4,
) -> PairLogps:
    def t(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float64)

    return PairLogps(
        policy_chosen=t(policy_chosen),
        policy_rejected=t(policy_rejected),
        ref_chosen=t(ref_chosen),
        ref_rejected=t(ref_rejected),
        chosen_tokens=torch.tensor([chosen_tokens]),
        rejected_tokens=torch.tensor([rejected_tokens]),
    )


def expect(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)


def check(actual: torch.Tensor, expected: float) -> None:
    assert actual.shape == (1,)
    assert_close(actual, expect(expected), atol=ATOL, rtol=0)


def test_log_ratios_of_the_shared_pair() -> None:
    """r_w = −10 − (−11) = 1; r_l = −12 − (−11) = −1; Δ = 1 − (−1) = 2."""
    x = pair()
    check(x.chosen_logratios, 1.0)
    check(x.rejected_logratios, -1.0)
    check(x.delta, 2.0)


def test_sigmoid() -> None:
    """−log σ(βΔ) = −log σ(0.2) = log(1 + e^−0.2) = log(1 + 0.818731) = log 1.818731 = 0.598139."""
    check(sigmoid_loss(pair(), BETA, 0.0), 0.598139)


def test_hinge() -> None:
    """max(0, 1 − βΔ) = max(0, 1 − 0.2) = 0.8."""
    check(hinge_loss(pair(), BETA, 0.0), 0.8)


def test_robust() -> None:
    """ε = 0.1: log σ(0.2) = −0.598139, log σ(−0.2) = −0.798139.
    [−(1 − ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1 − 2ε)
      = [0.9 · 0.598139 + 0.1 · (−0.798139)] / 0.8
      = [0.538325 − 0.079814] / 0.8 = 0.458511 / 0.8 = 0.573139."""
    check(robust_loss(pair(), BETA, 0.1), 0.573139)


def test_robust_without_label_noise_is_sigmoid() -> None:
    """ε = 0: [−1·log σ(βΔ) + 0] / 1 = −log σ(βΔ) = 0.598139."""
    check(robust_loss(pair(), BETA, 0.0), 0.598139)


def test_bco_pair() -> None:
    """β·r_w = 0.1, β·r_l = −0.1.
    −log σ(0.1) − log σ(−(−0.1)) = 2·log(1 + e^−0.1) = 2·log 1.904837 = 2 · 0.644397 = 1.288793."""
    check(bco_pair_loss(pair(), BETA, 0.0), 1.288793)


def test_apo_zero() -> None:
    """1 − σ(β·r_w) + σ(β·r_l) = 1 − σ(0.1) + σ(−0.1) = 1 − 0.524979 + 0.475021 = 0.950042."""
    check(apo_zero_loss(pair(), BETA, 0.0), 0.950042)


def test_apo_down() -> None:
    """σ(β·r_w) + 1 − σ(βΔ) = σ(0.1) + 1 − σ(0.2) = 0.524979 + 1 − 0.549834 = 0.975145."""
    check(apo_down_loss(pair(), BETA, 0.0), 0.975145)


def test_sppo_hard() -> None:
    """1/(2β) = 5. (r_w − 5)² + (r_l + 5)² = (1 − 5)² + (−1 + 5)² = 16 + 16 = 32."""
    check(sppo_hard_loss(pair(), BETA, 0.0), 32.0)


def test_ipo_averages_log_ratios_per_token() -> None:
    """5 chosen tokens, 4 rejected: r_w/5 = 0.2, r_l/4 = −0.25.
    (0.2 − (−0.25) − 1/(2β))² = (0.45 − 5)² = (−4.55)² = 20.7025."""
    check(ipo_loss(pair(chosen_tokens=5, rejected_tokens=4), BETA, 0.0), 20.7025)


def test_sft_is_mean_nll_per_chosen_token_over_the_batch() -> None:
    """Chosen log-probs −10 over 5 tokens and −9 over 3 tokens: (10 + 9) / (5 + 3) = 19/8 = 2.375 for
    every example (not the mean of per-example means, (2 + 3)/2 = 2.5). Rejected and reference unused."""
    x = PairLogps(
        policy_chosen=torch.tensor([-10.0, -9.0], dtype=torch.float64),
        policy_rejected=torch.tensor([-1.0, -100.0], dtype=torch.float64),
        ref_chosen=torch.tensor([-3.0, -50.0], dtype=torch.float64),
        ref_rejected=torch.tensor([-7.0, -2.0], dtype=torch.float64),
        chosen_tokens=torch.tensor([5, 3]),
        rejected_tokens=torch.tensor([2, 9]),
    )
    assert_close(sft_loss(x, BETA, 0.0), torch.tensor([2.375, 2.375], dtype=torch.float64), atol=ATOL, rtol=0)


def test_rewards() -> None:
    """rewards/chosen = β·r_w = 0.1 · 1 = 0.1; rewards/rejected = β·r_l = 0.1 · (−1) = −0.1."""
    out = preference_loss(pair(), loss_types=[LossType.sigmoid], weights=[1.0], beta=BETA)
    check(out.chosen_rewards, 0.1)
    check(out.rejected_rewards, -0.1)


def test_weighted_list_of_losses_is_the_weighted_sum() -> None:
    """0.5·sigmoid + 2·hinge + 0.25·sppo_hard = 0.5 · 0.598139 + 2 · 0.8 + 0.25 · 32
    = 0.299069 + 1.6 + 8 = 9.899069."""
    out = preference_loss(
        pair(),
        loss_types=[LossType.sigmoid, LossType.hinge, LossType.sppo_hard],
        weights=[0.5, 2.0, 0.25],
        beta=BETA,
    )
    check(out.losses, 9.899069)
    x = pair()
    by_hand = (
        0.5 * sigmoid_loss(x, BETA, 0.0)
        + 2.0 * hinge_loss(x, BETA, 0.0)
        + 0.25 * sppo_hard_loss(x, BETA, 0.0)
    )
    assert_close(out.losses, by_hand, atol=ATOL, rtol=0)


def test_label_smoothing_reaches_the_robust_loss() -> None:
    """preference_loss(robust, ε = 0.1) is the 0.573139 of test_robust."""
    out = preference_loss(pair(), loss_types=[LossType.robust], weights=[1.0], beta=BETA, label_smoothing=0.1)
    check(out.losses, 0.573139)


def test_loss_weights_must_match_loss_types() -> None:
    with pytest.raises(ValueError):
        preference_loss(pair(), loss_types=[LossType.sigmoid, LossType.hinge], weights=[1.0], beta=BETA)


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5])
def test_sigmoid_is_ln2_when_policy_equals_reference(beta: float) -> None:
    """π = π_ref ⇒ r_w = r_l = 0 ⇒ Δ = 0 ⇒ −log σ(0) = −log ½ = ln 2 = 0.693147, whatever β and the
    log-probs (here a batch of three different pairs)."""
    logps = torch.tensor([-3.5, -42.0, -0.25], dtype=torch.float64)
    rejected = torch.tensor([-7.0, -1.0, -19.0], dtype=torch.float64)
    x = PairLogps(
        logps, rejected, logps.clone(), rejected.clone(), torch.tensor([3, 9, 1]), torch.tensor([4, 2, 8])
    )
    out = preference_loss(x, loss_types=[LossType.sigmoid], weights=[1.0], beta=beta)
    assert_close(out.losses, torch.full((3,), math.log(2), dtype=torch.float64), atol=ATOL, rtol=0)
    assert_close(out.chosen_rewards, torch.zeros(3, dtype=torch.float64), atol=ATOL, rtol=0)
    assert_close(out.rejected_rewards, torch.zeros(3, dtype=torch.float64), atol=ATOL, rtol=0)


def test_rewards_are_detached_and_losses_are_not() -> None:
    """Gradients flow into the policy log-probs through the loss only; rewards are metrics."""
    policy_chosen = torch.tensor([-10.0], dtype=torch.float64, requires_grad=True)
    policy_rejected = torch.tensor([-12.0], dtype=torch.float64, requires_grad=True)
    x = PairLogps(
        policy_chosen,
        policy_rejected,
        expect(-11.0),
        expect(-11.0),
        torch.tensor([5]),
        torch.tensor([4]),
    )
    out = preference_loss(x, loss_types=list(LossType), weights=[1.0] * len(LossType), beta=BETA)
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    out.losses.sum().backward()
    assert policy_chosen.grad is not None and policy_rejected.grad is not None


def test_losses_keep_the_batch_dimension() -> None:
    """No reduction inside a loss: (B,) in, (B,) out, for every registered loss."""
    b = 4
    x = PairLogps(
        -torch.rand(b, dtype=torch.float64) * 20,
        -torch.rand(b, dtype=torch.float64) * 20,
        -torch.rand(b, dtype=torch.float64) * 20,
        -torch.rand(b, dtype=torch.float64) * 20,
        torch.randint(1, 10, (b,)),
        torch.randint(1, 10, (b,)),
    )
    for name, fn in LOSSES.items():
        assert fn(x, BETA, 0.1).shape == (b,), name


def test_every_loss_type_is_registered() -> None:
    assert set(LOSSES) == set(LossType)
