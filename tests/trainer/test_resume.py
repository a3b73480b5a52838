"""Preemption is normal on GPU clusters: a killed or terminated run resumes and ends where an
uninterrupted one would."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.harness import TIMEOUT, adapter_weights, parse_lines, run_trainer, trainer_env, write_spec

pytestmark = pytest.mark.slow


def _spec(small_spec: dict[str, Any], out: Path, max_steps: int = 30) -> dict[str, Any]:
    spec = small_spec | {"output_dir": str(out)}
    spec["hyperparameters"] = small_spec["hyperparameters"] | {"max_steps": max_steps, "save_steps": 5}
    return spec


def _run_until_checkpoint(spec_path: Path, sig: signal.Signals) -> tuple[int, list[dict[str, Any]]]:
    """Start the trainer, send `sig` as soon as it reports its first checkpoint, return its exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignd_trainer", "--spec", str(spec_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=trainer_env(),
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.startswith("{"):
            seen.append(json.loads(line))
            if seen[-1]["kind"] == "checkpoint":
                proc.send_signal(sig)
                break
    rest = proc.stdout.read()
    return proc.wait(timeout=TIMEOUT), seen + parse_lines(rest)


def _assert_same_adapter(a: Path, b: Path) -> None:
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=1e-5)


def test_killed_run_resumes_to_the_same_adapter(small_spec: dict[str, Any], tmp_path: Path) -> None:
    reference = tmp_path / "uninterrupted"
    run = run_trainer(["--spec", str(write_spec(tmp_path / "a.json", _spec(small_spec, reference)))])
    assert run.returncode == 0, run.stderr

    killed = tmp_path / "killed"
    spec_path = write_spec(tmp_path / "b.json", _spec(small_spec, killed))
    code, _ = _run_until_checkpoint(spec_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (killed / "adapter").exists(), "the run was killed before it finished"

    resumed = run_trainer(["--spec", str(spec_path)])
    assert resumed.returncode == 0, resumed.stderr
    assert any("resumed from checkpoint" in e["message"] for e in resumed.events("status"))
    assert resumed.metrics("train")[0]["step"] > 1
    _assert_same_adapter(reference, killed)


def test_sigterm_checkpoints_and_exits_retriable(small_spec: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "spec.json", _spec(small_spec, out, max_steps=200))
    code, lines = _run_until_checkpoint(spec_path, signal.SIGTERM)
    assert code == 143
    errors = [line for line in lines if line["kind"] == "event" and line["type"] == "error"]
    assert errors and errors[-1]["data"]["reason"] == "Terminated"
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved and not any(name.endswith(".tmp") for name in saved)
    last_step = max(line["step"] for line in lines if line["kind"] == "metrics")
    assert saved[-1] == f"step-{last_step:08d}", "no trained step is lost: the last one is checkpointed"


def test_resume_refuses_a_checkpoint_from_a_different_spec(
    small_spec: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_trainer(["--spec", str(write_spec(tmp_path / "a.json", _spec(small_spec, out, max_steps=5)))])
    assert first.returncode == 0, first.stderr
    shutil.rmtree(out / "adapter")
    changed = _spec(small_spec, out, max_steps=10)
    changed["lora"] = {"r": 4, "alpha": 8}
    run = run_trainer(["--spec", str(write_spec(tmp_path / "b.json", changed))])
    assert run.returncode == 65
    assert "different job spec" in run.stderr and "lora" in run.stderr
