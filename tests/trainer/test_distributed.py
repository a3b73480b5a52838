"""Data-parallel training with torchrun: two processes at the same global batch match one."""

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.trainer.harness import adapter_weights, run_trainer, write_spec

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed",
)
def test_two_cpu_processes_match_one(small_spec: dict[str, Any], tmp_path: Path) -> None:
    def spec_for(out: Path) -> Path:
        spec = small_spec | {"output_dir": str(out), "resources": {"gpus": 0}}
        spec["hyperparameters"] = small_spec["hyperparameters"] | {
            "batch_size": 8,
            "max_steps": 6,
            "save_steps": 3,
        }
        return write_spec(tmp_path / f"{out.name}.json", spec)

    single = run_trainer(["--spec", str(spec_for(tmp_path / "single"))])
    assert single.returncode == 0, single.stderr
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m"]
    ddp = run_trainer(["--spec", str(spec_for(tmp_path / "ddp"))], launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr

    single_loss = [m["values"]["loss"] for m in single.metrics("train")]
    ddp_loss = [m["values"]["loss"] for m in ddp.metrics("train")]
    assert len(ddp_loss) == 6, "only rank 0 reports, once per step"
    assert ddp_loss == pytest.approx(single_loss, abs=1e-5)
    assert (
        ddp.metrics("train")[-1]["values"]["num_tokens"]
        == single.metrics("train")[-1]["values"]["num_tokens"]
    )
    a, b = adapter_weights(tmp_path / "single"), adapter_weights(tmp_path / "ddp")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
