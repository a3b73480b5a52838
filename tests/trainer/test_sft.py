"""Supervised fine-tuning in the trainer: the loss by hand, the assistant-only loss mask (OpenAI's
`weight: 0`), agreement with a plain cross-entropy, and offline SFT then DPO started from its adapter."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from alignd.contract import TruncationMode
from alignd.contract.chat import parse_chat_line
from alignd_trainer.chat_data import collate_chats, tokenize_chat
from alignd_trainer.logps import sequence_logps
from alignd_trainer.losses import supervised_token_losses
from alignd_trainer.model import load_tokenizer
from alignd_trainer.synthetic import chat_rows, preference_rows, write_jsonl
from tests.trainer.harness import run_trainer, write_spec

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "apple.", "weight": 0},
        {"role": "user", "content": "Give me one animal."},
        {"role": "assistant", "content": "cat. I like the cat."},
    ]
}


def _chat(row: dict[str, Any], index: int = 0, tokenizer: Any = None, max_length: int = 1024) -> Any:
    return tokenize_chat(
        tokenizer,
        parse_chat_line(json.dumps(row), index + 1),
        index,
        max_length=max_length,
        truncation_mode=TruncationMode.keep_start,
    )


def test_supervised_token_losses_by_hand() -> None:
    """Two rows with summed log-probs −2 and −6 over 4 trained tokens in all: losses 2/4 = 0.5 and
    6/4 = 1.5, whose sum 2.0 is the mean negative log-likelihood per trained token (8 / 4)."""
    logps = torch.tensor([-2.0, -6.0], dtype=torch.float64)
    losses = supervised_token_losses(logps, 4)
    assert_close(losses, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert_close(losses.sum(), torch.tensor(2.0, dtype=torch.float64))


def test_loss_mask_is_the_trained_assistant_turns_only(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    item = _chat(CONVERSATION, tokenizer=tokenizer)
    trained = [token for token, bit in zip(item.input_ids, item.loss_mask, strict=True) if bit]
    # The weight-0 answer, the prompts and the role headers are context; the last answer and the
    # template's end of turn are trained.
    assert tokenizer.decode(trained) == "cat. I like the cat.</s>\n"
    unweighted = {
        "messages": [{**m, "weight": 1} if m.get("weight") == 0 else m for m in CONVERSATION["messages"]]
    }
    both = _chat(unweighted, tokenizer=tokenizer)
    both_text = tokenizer.decode([t for t, bit in zip(both.input_ids, both.loss_mask, strict=True) if bit])
    assert both_text == "apple.</s>\ncat. I like the cat.</s>\n"


def test_loss_equals_cross_entropy_over_trained_tokens(tiny_model_dir: Path) -> None:
    """The trainer's SFT loss (masked log-probs summed, over the batch's trained tokens) is torch's
    cross-entropy with every untrained position ignored, averaged over the trained tokens."""
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rows = [CONVERSATION, *chat_rows(3, seed=5)]
    items = [_chat(row, i, tokenizer) for i, row in enumerate(rows)]
    batch = collate_chats(items, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        scored = sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        total = sum(item.loss_tokens for item in items)
        ours = supervised_token_losses(scored.logps, total).sum()
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.input_ids.masked_fill(batch.completion_mask == 0, -100)[:, 1:]
    want = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    assert int(scored.tokens.sum()) == total
    assert_close(ours, want, rtol=1e-5, atol=1e-6)


def test_truncation_keeps_the_mask_aligned(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    full = _chat(CONVERSATION, tokenizer=tokenizer)
    cut = _chat(CONVERSATION, tokenizer=tokenizer, max_length=len(full.input_ids) - 3)
    assert cut.input_ids == full.input_ids[:-3] and cut.loss_mask == full.loss_mask[:-3]
    assert cut.loss_tokens == full.loss_tokens - 3


@pytest.mark.slow
def test_offline_full_sft_then_lora_dpo_starts_from_its_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A full SFT run lowers its loss; a LoRA DPO run whose spec starts from those weights has, at step 1,
    the SFT model's log-probs as policy (higher than the base's on the answers SFT taught) and as
    reference (rewards are zero)."""
    chats = write_jsonl(tmp_path / "chat.jsonl", chat_rows(64, seed=3))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", preference_rows(8, seed=4, fmt="conversational"))
    sft: dict[str, Any] = {
        "model": str(tiny_model_dir),
        "method": "supervised",
        "training_file": str(chats),
        "validation_file": str(write_jsonl(tmp_path / "heldout.jsonl", chat_rows(16, seed=9))),
        "output_dir": str(tmp_path / "sft"),
        "training_type": "full",
        "hyperparameters": {
            "batch_size": 16,
            "n_epochs": 3,
            "learning_rate": 3e-3,
            "max_steps": 12,
            "save_steps": 6,
        },
    }
    run = run_trainer(["--spec", str(write_spec(tmp_path / "sft.json", sft))])
    assert run.returncode == 0, run.stderr
    losses = [m["values"]["loss"] for m in run.metrics("train")]
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses
    evals = run.metrics("eval")
    assert [point["step"] for point in evals] == [12] and set(evals[0]["values"]) == {"eval_loss"}
    assert evals[0]["values"]["eval_loss"] < losses[0] - 1.0, "held-out conversations follow the rule too"
    weights = tmp_path / "sft" / "model"
    assert (weights / "config.json").exists()

    def dpo_step_one(init: dict[str, Any] | None, name: str) -> dict[str, float]:
        spec: dict[str, Any] = {
            "model": str(tiny_model_dir),
            "training_file": str(pairs),
            "output_dir": str(tmp_path / name),
            "init": init,
            "lora": {"r": 8, "alpha": 16},
            "merged_weights": False,
            "hyperparameters": {"batch_size": 8, "max_steps": 1, "packing": False},
        }
        dpo = run_trainer(["--spec", str(write_spec(tmp_path / f"{name}.json", spec))])
        assert dpo.returncode == 0, dpo.stderr
        values: dict[str, float] = dpo.metrics("train")[0]["values"]
        return values

    chained = dpo_step_one(
        {"source": "sft", "layers": [{"kind": "full", "location": str(weights)}]}, "chained"
    )
    from_base = dpo_step_one(None, "base")
    assert chained["rewards/margins"] == pytest.approx(0.0, abs=1e-5), "the reference is the SFT model"
    assert chained["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    # SFT taught the answers' form ("<thing>. I like the <thing>."): the chosen answers ("<thing>.") are
    # likelier under the SFT model than under the random base.
    assert chained["logps/chosen"] > from_base["logps/chosen"] + 1.0, (chained, from_base)
