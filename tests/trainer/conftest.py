from pathlib import Path
from typing import Any

import pytest

from alignd_trainer.synthetic import preference_rows, write_jsonl


@pytest.fixture(scope="session")
def rule_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Training and held-out files of the category rule (chosen names a thing of the asked category)."""
    root = tmp_path_factory.mktemp("rule_data")
    return (
        write_jsonl(root / "train.jsonl", preference_rows(2000, seed=1)),
        write_jsonl(root / "heldout.jsonl", preference_rows(64, seed=2)),
    )


@pytest.fixture
def small_spec(tiny_model_dir: Path, rule_data: tuple[Path, Path], tmp_path: Path) -> dict[str, Any]:
    """A few-second LoRA run on the tiny model; tests override what they exercise."""
    return {
        "model": str(tiny_model_dir),
        "training_file": str(rule_data[0]),
        "output_dir": str(tmp_path / "out"),
        "lora": {"r": 8, "alpha": 16},
        "hyperparameters": {
            "batch_size": 8,
            "learning_rate": 2e-3,
            "beta": 0.5,
            "max_steps": 12,
            "save_steps": 4,
            "warmup_ratio": 0.1,
        },
    }
