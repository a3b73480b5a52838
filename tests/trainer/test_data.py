"""Preference data in the trainer: reading and validating JSONL, tokenizing like TRL 1.16, collating,
and the per-sequence log-probs computed from the collated batch."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignd.contract import DataFormat, ExitCode, PreferenceExample, TruncationMode, parse_preference_line
from alignd_trainer import logps as logps_module
from alignd_trainer.data import (
    Batch,
    DataError,
    TokenizedPair,
    collate,
    read_examples,
    tokenize_example,
    tokenize_examples,
)
from alignd_trainer.errors import BadInputError
from alignd_trainer.logps import sequence_logps
from alignd_trainer.synthetic import preference_rows, write_jsonl

pytestmark = pytest.mark.usefixtures("torch_one_thread")

USER = {"role": "user", "content": "Name a fruit."}
SYSTEM = {"role": "system", "content": "Answer in one word."}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def example(row: dict[str, Any], line: int = 1) -> PreferenceExample:
    return parse_preference_line(json.dumps(row), line)


def tokenize(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> TokenizedPair:
    return tokenize_example(tokenizer, example(row), 0)


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text=text)["input_ids"])


def chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    out: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


# --- tokenization conventions -------------------------------------------------------------------------


def test_eos_is_appended_once_to_string_completions(tokenizer: PreTrainedTokenizerBase) -> None:
    pair = tokenize(tokenizer, {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " tiger."})
    eos = tokenizer.eos_token_id
    assert pair.chosen_ids[-1] == eos and pair.chosen_ids.count(eos) == 1
    assert pair.rejected_ids[-1] == eos and pair.rejected_ids.count(eos) == 1
    assert pair.prompt_ids + pair.chosen_ids == ids(tokenizer, "Name a fruit. apple.</s>")


def test_eos_already_present_is_not_doubled(tokenizer: PreTrainedTokenizerBase) -> None:
    plain = tokenize(tokenizer, {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " tiger."})
    with_eos = tokenize(
        tokenizer, {"prompt": "Name a fruit.", "chosen": " apple.</s>", "rejected": " tiger.</s>"}
    )
    assert with_eos == plain
    assert with_eos.chosen_ids.count(tokenizer.eos_token_id) == 1


def test_no_double_bos_in_standard_format(tokenizer: PreTrainedTokenizerBase) -> None:
    pair = tokenize(tokenizer, {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " tiger."})
    bos = tokenizer.bos_token_id
    assert pair.prompt_ids[0] == bos
    assert (pair.prompt_ids + pair.chosen_ids).count(bos) == 1
    assert (pair.prompt_ids + pair.rejected_ids).count(bos) == 1


def test_no_double_bos_in_conversational_format(tokenizer: PreTrainedTokenizerBase) -> None:
    """The chat template writes {{ bos_token }} itself; the tokenizer must not add a second one."""
    row = {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": "apple."}],
        "rejected": [{"role": "assistant", "content": "tiger."}],
    }
    pair = tokenize(tokenizer, row)
    bos = tokenizer.bos_token_id
    assert pair.prompt_ids[0] == bos
    assert (pair.prompt_ids + pair.chosen_ids).count(bos) == 1
    assert pair.prompt_ids == chat_ids(tokenizer, [USER], add_generation_prompt=True)
    assert pair.prompt_ids + pair.chosen_ids == chat_ids(tokenizer, [USER, row["chosen"][0]])
    # Conversational completions end with the template's end-of-turn (EOS then newline), not an extra EOS.
    assert pair.chosen_ids.count(tokenizer.eos_token_id) == 1


def test_completion_starts_where_prompt_and_prompt_plus_completion_diverge(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """The prompt "Name a fru" ends in the token " fru", but "Name a fruit." merges to " fruit": the prompt
    tokens are not a prefix of prompt+completion. The completion starts at the first differing token, the
    earlier one of chosen and rejected, so both full sequences are exactly the joint tokenization."""
    assert ids(tokenizer, "Name a fru")[-1] != ids(tokenizer, "Name a fruit.")[3]  # the premise: a merge
    row = {"prompt": "Name a fru", "chosen": "it.", "rejected": "x."}
    pair = tokenize(tokenizer, row)
    chosen_full = ids(tokenizer, "Name a fruit.</s>")
    rejected_full = ids(tokenizer, "Name a frux.</s>")
    assert pair.prompt_ids + pair.chosen_ids == chosen_full
    assert pair.prompt_ids + pair.rejected_ids == rejected_full
    prefix = 0
    while chosen_full[prefix] == ids(tokenizer, "Name a fru")[prefix]:
        prefix += 1
    assert len(pair.prompt_ids) == prefix < len(ids(tokenizer, "Name a fru"))


def test_implicit_prompt_is_the_shared_leading_turns(tokenizer: PreTrainedTokenizerBase) -> None:
    turns = [
        SYSTEM,
        USER,
        {"role": "assistant", "content": "apple."},
        {"role": "user", "content": "Another?"},
    ]
    good, bad = {"role": "assistant", "content": "mango."}, {"role": "assistant", "content": "tiger."}
    implicit = example({"chosen": [*turns, good], "rejected": [*turns, bad]})
    assert implicit.format is DataFormat.conversational
    assert implicit.prompt == turns
    assert implicit.chosen == [good] and implicit.rejected == [bad]
    explicit = example({"prompt": turns, "chosen": [good], "rejected": [bad]})
    assert tokenize_example(tokenizer, implicit, 0) == tokenize_example(tokenizer, explicit, 0)


def test_openai_format_equals_its_conversational_equivalent(tokenizer: PreTrainedTokenizerBase) -> None:
    openai_rows = preference_rows(8, seed=3, fmt="openai")
    conversational_rows = preference_rows(8, seed=3, fmt="conversational")
    for i, (a, b) in enumerate(zip(openai_rows, conversational_rows, strict=True)):
        ours, theirs = example(a, i + 1), example(b, i + 1)
        assert ours.format is DataFormat.openai and theirs.format is DataFormat.conversational
        assert (ours.prompt, ours.chosen, ours.rejected) == (theirs.prompt, theirs.chosen, theirs.rejected)
        assert tokenize_example(tokenizer, ours, i) == tokenize_example(tokenizer, theirs, i)


def test_optional_fields_are_kept(tokenizer: PreTrainedTokenizerBase) -> None:
    row = {
        "prompt": "Name a fruit.",
        "chosen": " apple.",
        "rejected": " tiger.",
        "id": 7,
        "weight": 2.5,
        "votes": [3, 1],
        "metadata": {"source": "test"},
    }
    parsed = example(row)
    assert (parsed.id, parsed.weight, parsed.agreement, parsed.metadata) == (
        "7",
        2.5,
        0.75,
        {"source": "test"},
    )
    assert tokenize_example(tokenizer, parsed, 4).weight == 2.5
    assert tokenize_example(tokenizer, parsed, 4).index == 4


# --- truncation, dropping, collation ------------------------------------------------------------------

PAIRS = [
    TokenizedPair(index=10, prompt_ids=[11, 12, 13], chosen_ids=[21, 22, 23, 24], rejected_ids=[31]),
    TokenizedPair(index=20, prompt_ids=[41], chosen_ids=[51], rejected_ids=[61, 62], weight=0.5),
]


def test_collate_puts_chosen_first_and_pads_right() -> None:
    batch = collate(PAIRS, pad_token_id=0, max_length=100, truncation_mode=TruncationMode.keep_start)
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 21, 22, 23, 24],
        [41, 51, 0, 0, 0, 0, 0],
        [11, 12, 13, 31, 0, 0, 0],
        [41, 61, 62, 0, 0, 0, 0],
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
    ]
    assert batch.completion_mask.tolist() == [
        [0, 0, 0, 1, 1, 1, 1],
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
    ]
    assert batch.weights.tolist() == [1.0, 0.5]
    assert batch.indices == [10, 20] and batch.pairs == 2


def test_collate_keep_start_truncates_the_end_of_each_sequence() -> None:
    batch = collate(PAIRS, pad_token_id=0, max_length=5, truncation_mode=TruncationMode.keep_start)
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 21, 22],
        [41, 51, 0, 0, 0],
        [11, 12, 13, 31, 0],
        [41, 61, 62, 0, 0],
    ]
    assert batch.completion_mask.tolist() == [
        [0, 0, 0, 1, 1],
        [0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 1, 1, 0, 0],
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
    ]


def test_collate_keep_end_truncates_the_start_of_each_sequence() -> None:
    batch = collate(PAIRS, pad_token_id=0, max_length=5, truncation_mode=TruncationMode.keep_end)
    assert batch.input_ids.tolist() == [
        [12, 13, 21, 22, 23, 24][-5:],
        [41, 51, 0, 0, 0],
        [11, 12, 13, 31, 0],
        [41, 61, 62, 0, 0],
    ]
    assert batch.completion_mask.tolist() == [
        [0, 1, 1, 1, 1],
        [0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 1, 1, 0, 0],
    ]


def _long_prompt_examples() -> list[PreferenceExample]:
    prompts = ["Name a fruit.", "Name a fruit. " * 4 + "Name a fruit.", "Name a fruit. Name a fruit."]
    return [
        example({"prompt": p, "chosen": " apple.", "rejected": " tiger."}, i + 1)
        for i, p in enumerate(prompts)
    ]


def test_pairs_whose_prompt_fills_max_length_are_dropped_with_keep_start(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    examples = _long_prompt_examples()
    lengths = [len(tokenize_example(tokenizer, e, i).prompt_ids) for i, e in enumerate(examples)]
    assert lengths[0] < lengths[2] < lengths[1]
    # max_length == the middle prompt's length: that prompt fills it exactly (dropped), the short one is kept.
    out = tokenize_examples(
        tokenizer, examples, max_length=lengths[2], truncation_mode=TruncationMode.keep_start
    )
    assert [p.index for p in out.pairs] == [0]
    assert out.dropped_prompt_too_long == 2
    assert out.dropped_low_agreement == 0
    out = tokenize_examples(
        tokenizer, examples, max_length=lengths[2] + 1, truncation_mode=TruncationMode.keep_start
    )
    assert [p.index for p in out.pairs] == [0, 2]
    assert out.dropped_prompt_too_long == 1


def test_keep_end_drops_nothing_for_long_prompts(tokenizer: PreTrainedTokenizerBase) -> None:
    examples = _long_prompt_examples()
    out = tokenize_examples(tokenizer, examples, max_length=8, truncation_mode=TruncationMode.keep_end)
    assert [p.index for p in out.pairs] == [0, 1, 2]
    assert out.dropped_prompt_too_long == 0
    batch = collate(
        out.pairs, pad_token_id=tokenizer.pad_token_id, max_length=8, truncation_mode=TruncationMode.keep_end
    )
    assert batch.input_ids.shape[1] == 8
    # The completion (ending in EOS) survives in every row.
    assert (batch.completion_mask.sum(dim=1) > 0).all()


def test_agreement_threshold_drops_and_counts(tokenizer: PreTrainedTokenizerBase) -> None:
    base = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " tiger."}
    examples = [
        example({**base, "agreement": 0.9}, 1),
        example({**base, "agreement": 0.4}, 2),
        example({**base, "votes": [1, 3]}, 3),  # agreement 0.25
        example(base, 4),  # no agreement recorded: kept
        example({**base, "agreement": 0.6}, 5),  # exactly at the threshold: kept
    ]
    out = tokenize_examples(
        tokenizer, examples, max_length=64, truncation_mode=TruncationMode.keep_start, agreement_threshold=0.6
    )
    assert [p.index for p in out.pairs] == [0, 3, 4]
    assert out.dropped_low_agreement == 2
    assert out.dropped_prompt_too_long == 0
    out = tokenize_examples(tokenizer, examples, max_length=64, truncation_mode=TruncationMode.keep_start)
    assert len(out.pairs) == 5 and out.dropped_low_agreement == 0


# --- reading files: bad data --------------------------------------------------------------------------

GOOD = json.dumps({"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " tiger."})


def _chat(**overrides: Any) -> str:
    """A valid conversational line, with some fields replaced."""
    row: dict[str, Any] = {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": "apple."}],
        "rejected": [{"role": "assistant", "content": "tiger."}],
    }
    row.update(overrides)
    return json.dumps(row)


GOOD_CHAT = _chat()


BAD_LINES: dict[str, tuple[list[str | bytes], int, str | None, str]] = {
    # case: (file lines, bad line number, field named in the message or None, words in the message)
    "malformed json": ([GOOD, '{"prompt": "x", "chosen": '], 2, None, "not valid JSON"),
    "non-object line": ([GOOD, GOOD, "[1, 2, 3]"], 3, None, "expected a JSON object"),
    "string line": (['"just a string"'], 1, None, "expected a JSON object"),
    "missing chosen": ([json.dumps({"prompt": "p", "rejected": " r"})], 1, "chosen", "missing field"),
    "missing rejected": ([GOOD, json.dumps({"prompt": "p", "chosen": " c"})], 2, "rejected", "missing field"),
    "missing prompt": ([json.dumps({"chosen": " c", "rejected": " r"})], 1, "prompt", "missing field"),
    "missing prompt, no shared turns": (
        [
            json.dumps(
                {
                    "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}],
                }
            )
        ],
        1,
        "prompt",
        "share no leading turns",
    ),
    "wrong role": (
        [GOOD_CHAT, _chat(prompt=[{"role": "bot", "content": "hi"}])],
        2,
        "prompt[0].role",
        "'bot'",
    ),
    "completion role not assistant": (
        [_chat(chosen=[{"role": "user", "content": "apple."}])],
        1,
        "chosen[0].role",
        "must be 'assistant'",
    ),
    "empty string completion": (
        [json.dumps({"prompt": "Name a fruit.", "chosen": " apple.", "rejected": "  "})],
        1,
        "rejected",
        "empty completion",
    ),
    "empty message list completion": ([_chat(chosen=[])], 1, "chosen", "empty completion"),
    "empty message content completion": (
        [_chat(rejected=[{"role": "assistant", "content": " "}])],
        1,
        "rejected[0].content",
        "empty completion",
    ),
    "content not a string": (
        [_chat(chosen=[{"role": "assistant", "content": 3}])],
        1,
        "chosen[0].content",
        "expected a string",
    ),
    "openai missing preferred_output": (
        [json.dumps({"input": {"messages": [USER]}, "non_preferred_output": []})],
        1,
        "preferred_output",
        "missing field",
    ),
    "mixed formats": ([GOOD, GOOD, GOOD_CHAT], 3, None, "one format per file"),
    "invalid utf-8": (
        [GOOD, b'{"prompt": "Name a \xff fruit.", "chosen": " a", "rejected": " b"}'],
        2,
        None,
        "invalid UTF-8",
    ),
}


def _write(path: Path, lines: list[str | bytes]) -> Path:
    raw = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_data_names_line_and_field(case: str, tmp_path: Path) -> None:
    lines, line, field, words = BAD_LINES[case]
    path = _write(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as caught:
        read_examples(path)
    error = caught.value
    message = str(error)
    assert error.row_error.line == line
    assert error.row_error.field == field
    assert f"line {line}" in message
    if field is not None:
        assert f"'{field}'" in message
    assert words in message
    assert message.startswith("train.jsonl ")
    assert error.exit_code is ExitCode.BAD_INPUT


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.jsonl", [GOOD, "", "   ", json.dumps({"prompt": "p", "chosen": " c"})])
    with pytest.raises(DataError, match=r"line 4, field 'rejected'"):
        read_examples(path)


@pytest.mark.parametrize("lines", [[], [""], ["", "  "]], ids=["empty", "one blank line", "blank lines"])
def test_empty_file(lines: list[str | bytes], tmp_path: Path) -> None:
    path = _write(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError, match="line 1: the file has no rows"):
        read_examples(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(BadInputError, match="data file not found") as caught:
        read_examples(path)
    assert not isinstance(caught.value, DataError)
    assert str(path) in str(caught.value)
    assert caught.value.exit_code is ExitCode.BAD_INPUT


@pytest.mark.parametrize("fmt", ["standard", "conversational", "openai"])
def test_good_files_read_in_every_format(fmt: str, tmp_path: Path) -> None:
    rows = preference_rows(5, seed=1, fmt=fmt)  # type: ignore[arg-type]
    examples = read_examples(write_jsonl(tmp_path / "train.jsonl", rows))
    assert [e.line for e in examples] == [1, 2, 3, 4, 5]
    assert {e.format for e in examples} == {DataFormat(fmt)}


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes((GOOD + "\r\n" + GOOD + "\r\n").encode())
    assert len(read_examples(path)) == 2


# --- sequence log-probs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> PreTrainedModel:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    return model


def naive_sequence_logps(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full (N, T, V) logits, log_softmax, gather the next token, masked sum; plus the mean-logit sum."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1].float()
    mask = completion_mask[:, 1:].float()
    token_logps = logits.log_softmax(-1).gather(2, input_ids[:, 1:, None]).squeeze(2)
    return (token_logps * mask).sum(1), (logits.detach().mean(-1) * mask).sum(1)


LONGER_ROW: dict[str, dict[str, Any]] = {
    "standard": {
        "prompt": "Which fruit do you like? Say a fruit:",
        "chosen": " mango. I like the mango.",
        "rejected": " I like the otter.",
    },
    "conversational": {
        "prompt": [SYSTEM, USER],
        "chosen": [{"role": "assistant", "content": "I like the mango."}],
        "rejected": [{"role": "assistant", "content": "otter."}],
    },
}


def _batch(tokenizer: PreTrainedTokenizerBase, fmt: str) -> Batch:
    """Synthetic rows plus one longer pair, so that sequences differ in length and padding is masked."""
    rows = [*preference_rows(5, seed=7, fmt=fmt), LONGER_ROW[fmt]]  # type: ignore[arg-type]
    examples = [example(row, i + 1) for i, row in enumerate(rows)]
    data = tokenize_examples(tokenizer, examples, max_length=64, truncation_mode=TruncationMode.keep_start)
    return collate(
        data.pairs,
        pad_token_id=tokenizer.pad_token_id,
        max_length=64,
        truncation_mode=TruncationMode.keep_start,
    )


def _grads(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(params=["trained head, probabilities kept", "trained head, recomputed", "frozen head"])
def head_trained(
    request: pytest.FixtureRequest, model: PreTrainedModel, monkeypatch: pytest.MonkeyPatch
) -> Iterator[bool]:
    """Full fine-tuning trains the LM head (its gradient comes from the forward's probabilities, or from
    recomputed logits when they would take too much memory); LoRA freezes it (the hidden states' gradient
    is formed in the forward)."""
    trained = request.param.startswith("trained head")
    if request.param.endswith("recomputed"):
        monkeypatch.setattr(logps_module, "KEEP_PROBS_BYTES", 0)
    head = model.get_output_embeddings().weight
    head.requires_grad_(trained)
    yield trained
    head.requires_grad_(True)


@pytest.mark.parametrize("chunk_tokens", [7, 1024], ids=["many chunks", "one chunk"])
@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_sequence_logps_equals_naive_log_softmax(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    fmt: str,
    chunk_tokens: int,
    head_trained: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forward values and gradients w.r.t. every trained parameter match the plain full-logits computation."""
    monkeypatch.setattr(logps_module, "CHUNK_TOKENS", chunk_tokens)
    batch = _batch(tokenizer, fmt)
    assert (batch.attention_mask == 0).any(), "the batch should contain padding"
    # A fixed, uneven weighting of the sequences so every gradient path is exercised.
    weights = torch.linspace(0.5, 2.0, batch.input_ids.shape[0])

    model.zero_grad(set_to_none=True)
    ours = sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    (ours.logps * weights).sum().backward()
    our_grads = _grads(model)

    model.zero_grad(set_to_none=True)
    naive, naive_logits_sum = naive_sequence_logps(
        model, batch.input_ids, batch.attention_mask, batch.completion_mask
    )
    (naive * weights).sum().backward()
    naive_grads = _grads(model)
    model.zero_grad(set_to_none=True)

    assert ours.logps.dtype == torch.float32
    assert (ours.logps.detach() - naive.detach()).abs().max().item() < 1e-5
    assert ours.tokens.tolist() == batch.completion_mask[:, 1:].sum(1).tolist()
    assert (ours.logits_sum - naive_logits_sum).abs().max().item() < 1e-4
    assert not ours.logits_sum.requires_grad
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert ("lm_head.weight" in trained) is head_trained
    assert our_grads.keys() == naive_grads.keys() == trained
    for name, grad in our_grads.items():
        diff = (grad - naive_grads[name]).abs().max().item()
        assert diff < 1e-5, f"{name}: max abs grad diff {diff}"


def test_sequence_logps_fallback_path_for_non_plain_heads(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models with logit softcapping or scaling go through the model's own logits; same numbers here."""
    calls: list[bool] = []
    original: Callable[[Any], bool] = logps_module._plain_linear_head

    def not_plain(causal_lm: Any) -> bool:
        calls.append(original(causal_lm))
        return False

    monkeypatch.setattr(logps_module, "_plain_linear_head", not_plain)
    batch = _batch(tokenizer, "standard")
    with torch.no_grad():
        ours = sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        naive, _ = naive_sequence_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    assert calls == [True]
    assert (ours.logps - naive).abs().max().item() < 1e-5
