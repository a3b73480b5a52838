"""`alignd demo` (what `make demo` runs) works offline and shows the adapter learned the preference."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alignd_trainer.style_data import greets

pytestmark = pytest.mark.slow


def test_demo_trains_and_reports_accuracy_before_and_after(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alignd.cli", "demo", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        # OMP_NUM_THREADS passes through: under pytest-xdist, tests/conftest.py sets it to this worker's
        # share of the CPUs.
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
        | {name: os.environ[name] for name in ("OMP_NUM_THREADS", "PYTHONPATH") if name in os.environ},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # One measure in both columns: the base's and the tuned model's own sequence log-probs.
    assert "model finds chosen more likely than rejected (sequence log-prob)" in " ".join(proc.stdout.split())
    assert re.search(r"┃\s*measure\s*┃\s*base\s*┃\s*tuned\s*┃", proc.stdout), proc.stdout
    before, after = (float(x) for x in re.findall(r"│\s*([\d.]+)%\s*│\s*([\d.]+)%", proc.stdout)[0])
    assert after >= 90.0 and before < after
    adapters = list(tmp_path.glob("demo/ftjob-*/adapter/adapter_model.safetensors"))
    assert len(adapters) == 1


def test_smollm2_demo_teaches_a_greeting_that_shows_in_greedy_replies(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    """`alignd demo --model smollm2`: SmolLM2 (converted once by the fixture, which the demo then finds
    in the cache) learns to open answers with the greeting; the base never does."""
    proc = subprocess.run(
        [sys.executable, "-m", "alignd.cli", "demo", "--model", "smollm2", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1700,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
        | {"ALIGND_CACHE_DIR": str(smollm2_dir.parent.parent)}
        | {
            name: os.environ[name] for name in ("OMP_NUM_THREADS", "HOME", "PYTHONPATH") if name in os.environ
        },
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    replies = summary["replies"]
    assert len(replies) == 8 and all(r["before"] and r["after"] for r in replies)
    assert not any(greets(r["before"]) for r in replies)
    assert sum(greets(r["after"]) for r in replies) >= 6, replies
    assert summary["accuracy_before"] < 0.5 <= 0.9 <= summary["accuracy_after"]
    assert "greedy replies to held-out questions" in proc.stdout
