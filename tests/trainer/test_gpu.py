"""GPU behaviour: bf16 weights with fp32 log-probs. Skipped cleanly where no CUDA device exists (CI)."""

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignd_trainer.logps import sequence_logps
from tests.trainer.harness import run_trainer, write_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_logps_are_fp32_when_the_model_runs_in_bf16(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    ids = torch.randint(3, 300, (4, 16), device="cuda")
    mask = torch.zeros_like(ids)
    mask[:, 8:] = 1
    out = sequence_logps(model, ids, torch.ones_like(ids), mask)
    assert out.logps.dtype == torch.float32
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).cuda()
    exact = sequence_logps(reference, ids, torch.ones_like(ids), mask)
    torch.testing.assert_close(out.logps, exact.logps, atol=0.5, rtol=0.05)


def test_bf16_lora_run_reports_gpu_memory(small_spec: dict[str, Any], tmp_path: Path) -> None:
    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", small_spec))])
    assert run.returncode == 0, run.stderr
    first = run.metrics("train")[0]["values"]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["gpu_memory_gb"] > 0
