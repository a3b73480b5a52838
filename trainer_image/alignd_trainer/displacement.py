"""Likelihood displacement: DPO can widen the margin between chosen and rejected while pushing the
chosen responses' own log-probability down, below the reference model's (Razin et al. 2024,
"Unintentional Unalignment: Likelihood Displacement in Direct Preference Optimization"; Pal et al.
2024, "Smaug"). The margin then looks healthy while the model moves probability to responses that
neither side of the data contained, often degenerate ones (repeating a taught phrase).

The trainer reports `logps/chosen_vs_ref`, the mean over pairs of log π(chosen) - log π_ref(chosen),
every step, and warns once when `displaced` finds the pattern in the recent steps.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

WINDOW = 10
"""Steps the rule looks at: the older half against the newer half."""
MIN_DROP = 1.0
"""Nats per sequence the chosen responses must sit below the reference, on average over the newer
half, before a fall counts: early steps wobble around 0."""


@dataclass(frozen=True)
class StepSignal:
    step: int
    chosen_vs_ref: float
    """Mean log π(chosen) - log π_ref(chosen) over the step's pairs (nats per sequence)."""
    margin: float
    """Mean reward margin (rewards/margins) over the step's pairs."""


@dataclass(frozen=True)
class Displacement:
    first_step: int
    last_step: int
    chosen_vs_ref_before: float
    chosen_vs_ref_after: float
    margin_before: float
    margin_after: float

    def message(self) -> str:
        return (
            f"likelihood displacement between steps {self.first_step} and {self.last_step}: the chosen "
            f"responses' log-prob fell from {self.chosen_vs_ref_before:+.2f} to "
            f"{self.chosen_vs_ref_after:+.2f} nats against the reference while the reward margin rose "
            f"from {self.margin_before:+.3f} to {self.margin_after:+.3f}. The model is learning to prefer "
            "chosen by pushing rejected down faster than chosen, and may drift to text neither contains; "
            "check its generations, and consider a lower learning rate, a larger beta, or a loss with an "
            "anchor on chosen (apo_zero, or sft in a loss_type list)"
        )


def displaced(
    signals: Sequence[StepSignal], *, window: int = WINDOW, min_drop: float = MIN_DROP
) -> Displacement | None:
    """The pattern over the last `window` steps, or None.

    Split the window into an older and a newer half and average each. Displacement: the newer half's
    chosen-vs-reference log-prob is lower than the older half's and below -`min_drop`, while its
    margin is higher than the older half's and positive. Fewer than `window` steps: None."""
    if window < 2 or len(signals) < window:
        return None
    recent = signals[-window:]
    older, newer = recent[: window // 2], recent[window // 2 :]
    chosen_before, chosen_after = fmean(s.chosen_vs_ref for s in older), fmean(s.chosen_vs_ref for s in newer)
    margin_before, margin_after = fmean(s.margin for s in older), fmean(s.margin for s in newer)
    falling = chosen_after < chosen_before and chosen_after < -min_drop
    rising = margin_after > margin_before and margin_after > 0
    if not (falling and rising):
        return None
    return Displacement(
        first_step=recent[0].step,
        last_step=recent[-1].step,
        chosen_vs_ref_before=chosen_before,
        chosen_vs_ref_after=chosen_after,
        margin_before=margin_before,
        margin_after=margin_after,
    )
