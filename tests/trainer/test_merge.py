"""A LoRA run's merged model: written once training ends, in the dtype the base is stored in."""

from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.trainer.harness import run_trainer, write_spec


def test_merged_model_is_written_in_the_bases_stored_dtype(
    small_spec: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The trainer computes in fp32 on CPU; a base stored in bf16 gets a bf16 merged model, equal to
    peft's own merge of the saved adapter into that base, rounded to bf16."""
    base_dir = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(base_dir)
    spec = small_spec | {"model": str(base_dir)}
    spec["hyperparameters"] = spec["hyperparameters"] | {"max_steps": 2}

    run = run_trainer(["--spec", str(write_spec(tmp_path / "spec.json", spec))])

    assert run.returncode == 0, run.stderr[-2000:]
    out = Path(spec["output_dir"])
    [event] = run.events("merged")
    assert event["data"] == {"path": str(out / "merged"), "dtype": "bfloat16"}
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype="auto")
    assert merged.dtype == torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload().to(torch.bfloat16)
    got = merged.state_dict()
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(got[name], tensor, atol=0, rtol=0, msg=name)
    assert (out / "merged" / "tokenizer.json").exists() and (
        out / "merged" / "generation_config.json"
    ).exists()
