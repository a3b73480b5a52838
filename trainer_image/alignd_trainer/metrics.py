"""Per-step metric sums, reduced across ranks, then turned into TRL-named averages."""

import torch

from alignd_trainer.logps import SequenceLogps
from alignd_trainer.losses import LossOutput, PairLogps

FIELDS = (
    "pairs", "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected", "logps/chosen_vs_ref", "logps/rejected_vs_ref",
    "logits_sum/chosen", "tokens/chosen", "logits_sum/rejected", "tokens/rejected", "tokens/attention",
)  # fmt: skip
PER_PAIR = FIELDS[1:10]
"""Reported as means over pairs. `logps/*_vs_ref`: log π - log π_ref of the response, the likelihood
displacement signal (alignd_trainer.displacement); TRL has no name for it."""


class MetricSums:
    """Sums over every pair a step (or an eval pass) saw; `tensor` is what gets all-reduced."""

    def __init__(self, device: torch.device) -> None:
        self.tensor = torch.zeros(len(FIELDS), dtype=torch.float64, device=device)

    def add(
        self,
        out: LossOutput,
        x: PairLogps,
        policy: SequenceLogps,
        weights: torch.Tensor,
        attention_tokens: int,
    ) -> None:
        chosen_logps, rejected_logps = policy.logps.detach().chunk(2)
        chosen_logits, rejected_logits = policy.logits_sum.chunk(2)
        chosen_tokens, rejected_tokens = policy.tokens.chunk(2)
        margins = out.chosen_rewards - out.rejected_rewards
        values = [
            float(weights.numel()),
            (out.losses.detach() * weights).sum(),
            out.chosen_rewards.sum(),
            out.rejected_rewards.sum(),
            (margins > 0).float().sum(),
            margins.sum(),
            chosen_logps.sum(),
            rejected_logps.sum(),
            x.chosen_logratios.detach().sum(),
            x.rejected_logratios.detach().sum(),
            chosen_logits.sum(),
            chosen_tokens.sum(),
            rejected_logits.sum(),
            rejected_tokens.sum(),
            float(attention_tokens),
        ]
        self.tensor += torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=self.tensor.device) for v in values]
        )

    def averages(self, prefix: str = "") -> dict[str, float]:
        s = dict(zip(FIELDS, self.tensor.tolist(), strict=True))
        pairs = max(s["pairs"], 1.0)
        out = {name: s[name] / pairs for name in PER_PAIR}
        out["logits/chosen"] = s["logits_sum/chosen"] / max(s["tokens/chosen"], 1.0)
        out["logits/rejected"] = s["logits_sum/rejected"] / max(s["tokens/rejected"], 1.0)
        return {prefix + k: v for k, v in out.items()}

    @property
    def attention_tokens(self) -> int:
        return int(self.tensor[FIELDS.index("tokens/attention")].item())


SUPERVISED_FIELDS = ("sequences", "nll", "tokens/trained", "tokens/attention")


class SupervisedMetricSums(MetricSums):
    """SFT's sums: the negative log-likelihood of trained tokens and their count, so `loss` is the mean
    per trained token over the step (or eval pass), as TRL's SFTTrainer reports it."""

    def __init__(self, device: torch.device) -> None:
        self.tensor = torch.zeros(len(SUPERVISED_FIELDS), dtype=torch.float64, device=device)

    def add_sequences(self, logps: torch.Tensor, tokens: torch.Tensor, attention_tokens: int) -> None:
        values = [float(logps.numel()), -logps.detach().sum(), tokens.sum(), float(attention_tokens)]
        self.tensor += torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=self.tensor.device) for v in values]
        )

    def averages(self, prefix: str = "") -> dict[str, float]:
        s = dict(zip(SUPERVISED_FIELDS, self.tensor.tolist(), strict=True))
        return {prefix + "loss": s["nll"] / max(s["tokens/trained"], 1.0)}

    @property
    def attention_tokens(self) -> int:
        return int(self.tensor[SUPERVISED_FIELDS.index("tokens/attention")].item())
