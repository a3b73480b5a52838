"""Preference accuracy (one measure for base and tuned models) and the style pairs of the SmolLM2 demo."""

import json
from pathlib import Path

import pytest

from alignd_trainer import style_data
from alignd_trainer.preference import preference_accuracy, score_preferences
from alignd_trainer.score import score_to_path
from alignd_trainer.synthetic import preference_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_accuracy_counts_pairs_whose_chosen_is_more_likely() -> None:
    """-1 > -2 yes, -3 > -3 no (a tie is not a preference), -5 > -4 no, -0.5 > -9 yes: 2 of 4."""
    rows = [
        {"chosen_logps": -1.0, "rejected_logps": -2.0},
        {"chosen_logps": -3.0, "rejected_logps": -3.0},
        {"chosen_logps": -5.0, "rejected_logps": -4.0},
        {"chosen_logps": -0.5, "rejected_logps": -9.0},
    ]

    score = preference_accuracy(rows)

    assert (score.pairs, score.accuracy) == (4, 0.5)
    with pytest.raises(ValueError, match="no pairs"):
        preference_accuracy([])


def test_scores_come_from_the_training_scorer(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same per-pair log-probs `python -m alignd_trainer score` writes, for a model directory."""
    data = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(16, seed=5))
    score_to_path(tmp_path / "scored.jsonl", model_dir=str(tiny_model_dir), data=str(data))
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]

    score = score_preferences(tiny_model_dir, data, out=tmp_path / "kept.jsonl")

    assert score == preference_accuracy(rows)
    assert (tmp_path / "kept.jsonl").read_text() == (tmp_path / "scored.jsonl").read_text()


def test_style_pairs_differ_only_by_the_greeting_and_hold_out_unseen_questions() -> None:
    train, heldout = style_data.style_rows(heldout=8)

    assert len(heldout) == 8 and len(train) == len(style_data.questions()) - 8
    train_questions = {row["prompt"][-1]["content"] for row in train}
    assert not train_questions & {row["prompt"][-1]["content"] for row in heldout}
    for row in train + heldout:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen == f"{style_data.GREETING} {rejected}"
        assert style_data.greets(chosen) and not style_data.greets(rejected)
    assert style_data.greets("  ahoy, matey") and not style_data.greets("Hello! Ahoy!")
