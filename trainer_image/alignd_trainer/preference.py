"""Held-out preference accuracy: the share of pairs whose chosen response the model itself finds more
likely than the rejected one, by sequence log-prob (log π(chosen) > log π(rejected), summed over
completion tokens exactly as training scores them).

One measure for any model, base or tuned, so a before/after comparison compares like with like (an
implicit reward margin exists only for a tuned model against its base)."""

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignd_trainer.score import score_file


@dataclass(frozen=True)
class PreferenceScore:
    pairs: int
    accuracy: float
    """Share of pairs with log π(chosen) > log π(rejected), in [0, 1]."""


def preference_accuracy(rows: Iterable[Mapping[str, Any]]) -> PreferenceScore:
    """From `score_file` rows (each with chosen_logps and rejected_logps)."""
    wins = [row["chosen_logps"] > row["rejected_logps"] for row in rows]
    if not wins:
        raise ValueError("no pairs to score")
    return PreferenceScore(pairs=len(wins), accuracy=sum(wins) / len(wins))


def score_preferences(model_dir: str | Path, data: str | Path, *, out: Path | None = None) -> PreferenceScore:
    """Score every pair of a preference file with a model directory or a LoRA adapter directory (its
    base is read from adapter_config.json); `out` keeps the per-pair scores as JSONL."""
    buffer = io.StringIO()
    score_file(model_dir=str(model_dir), data=str(data), out=buffer)
    if out is not None:
        out.write_text(buffer.getvalue())
    return preference_accuracy(json.loads(line) for line in buffer.getvalue().splitlines())
