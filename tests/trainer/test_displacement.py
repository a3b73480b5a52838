"""Likelihood displacement: the rule over a window of steps, and the metric and the one warning event
of a real run whose loss pushes chosen log-probs down while the margin grows."""

import random
from pathlib import Path
from typing import Any

import pytest

from alignd_trainer.displacement import WINDOW, StepSignal, displaced
from alignd_trainer.synthetic import write_jsonl
from tests.trainer.harness import run_trainer, write_spec


def _signals(chosen: list[float], margins: list[float]) -> list[StepSignal]:
    return [StepSignal(i + 1, c, m) for i, (c, m) in enumerate(zip(chosen, margins, strict=True))]


def test_chosen_falling_below_the_reference_while_margins_rise_is_displacement() -> None:
    """Window 4: older half chosen (-0.5 + -1.5)/2 = -1.0, newer (-2 + -3)/2 = -2.5 < -1.0 and < -1;
    margins (0.1 + 0.2)/2 = 0.15 -> (0.3 + 0.5)/2 = 0.4 > 0.15 and > 0."""
    found = displaced(_signals([0.0, -0.5, -1.5, -2.0, -3.0], [0.0, 0.1, 0.2, 0.3, 0.5]), window=4)

    assert found is not None
    assert (found.first_step, found.last_step) == (2, 5)
    assert found.chosen_vs_ref_before == pytest.approx(-1.0) and found.chosen_vs_ref_after == pytest.approx(
        -2.5
    )
    assert found.margin_before == pytest.approx(0.15) and found.margin_after == pytest.approx(0.4)
    assert "steps 2 and 5" in found.message()


@pytest.mark.parametrize(
    ("chosen", "margins", "why"),
    [
        ([-2.0, -2.5, -1.5, -1.8], [0.1, 0.2, 0.3, 0.4], "chosen rose: -2.25 -> -1.65"),
        (
            [-0.2, -0.4, -0.6, -0.8],
            [0.1, 0.2, 0.3, 0.4],
            "chosen fell but stays within 1 nat of the reference",
        ),
        ([-1.0, -2.0, -3.0, -4.0], [0.4, 0.3, 0.2, 0.1], "margins fell"),
        ([-1.0, -2.0, -3.0, -4.0], [-0.4, -0.3, -0.2, -0.1], "margins rose but are still negative"),
        ([-1.0, -2.0, -3.0], [0.1, 0.2, 0.3], "fewer steps than the window"),
    ],
)
def test_other_patterns_are_not_displacement(chosen: list[float], margins: list[float], why: str) -> None:
    assert displaced(_signals(chosen, margins), window=4) is None, why


@pytest.fixture
def near_duplicate_pairs(tmp_path: Path) -> Path:
    """Chosen and rejected share a 12-word body and differ in the last word only."""
    rng = random.Random(0)
    words = ["apple", "river", "stone", "cloud", "green", "music", "table", "light"]
    rows = []
    for i in range(400):
        body = " ".join(rng.choice(words) for _ in range(12))
        rows.append({"prompt": f"say something {i % 17}", "chosen": f"{body} yes", "rejected": f"{body} no"})
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.mark.slow
def test_a_run_reports_chosen_vs_ref_and_warns_once(
    small_spec: dict[str, Any], near_duplicate_pairs: Path, tmp_path: Path
) -> None:
    """apo_down lowers the chosen log-probs on purpose while it widens the margin: the trainer must
    report the fall every step and warn about it exactly once."""
    spec = small_spec | {"training_type": "full", "training_file": str(near_duplicate_pairs)}
    spec["hyperparameters"] = spec["hyperparameters"] | {
        "loss_type": "apo_down",
        "beta": 0.1,
        "learning_rate": 1e-3,
        "max_steps": 2 * WINDOW,
        "save_steps": 1000,
        "warmup_ratio": 0,
    }

    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])

    assert run.returncode == 0, run.stderr[-2000:]
    points = [p["values"] for p in run.metrics("train")]
    # Step 1 scores the initial weights, which are the reference.
    assert points[0]["logps/chosen_vs_ref"] == pytest.approx(0.0, abs=1e-4)
    beta = spec["hyperparameters"]["beta"]
    for values in points:
        expected = beta * values["logps/chosen_vs_ref"]
        assert values["rewards/chosen"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    [warning] = [e for e in run.events("warning") if e["data"].get("signal") == "likelihood_displacement"]
    assert warning["level"] == "warn" and "likelihood displacement" in warning["message"]
    data = warning["data"]
    assert data["chosen_vs_ref_after"] < min(-1.0, data["chosen_vs_ref_before"])
    assert data["margin_after"] > max(0.0, data["margin_before"])
