"""Prompt-shared, padding-free batches give every pair the log-probs (and gradients) of its padded rows.

The padded path is the reference: test_trl_parity holds it to TRL. Here the packed path is held to the padded
one on the same rows (standard, conversational, implicit-prompt and OpenAI, with truncation in both modes),
for LoRA and full fine-tuning, on two architectures built from a config.
"""

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import (
    AttentionInterface,
    AutoTokenizer,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from alignd.contract import ATTENTION_ENV, AttentionKernel, TruncationMode
from alignd_trainer.attention import (
    FLEX,
    SDPA,
    attention_from_env,
    choose_attention,
    sliding_window,
)
from alignd_trainer.data import TokenizedPair, collate, read_examples, tokenize_examples
from alignd_trainer.errors import BadInputError
from alignd_trainer.logps import SequenceLogps, packed_logps, sequence_logps
from alignd_trainer.model import packing_unsupported, set_attention
from alignd_trainer.packing import PackedBatch, layout_pair, pack
from alignd_trainer.synthetic import tool_rows, write_jsonl
from alignd_trainer.tiny_model import tiny_llama_config
from alignd_trainer.varlen import VARLEN, cuda_varlen_available
from tests.trainer.parity_rows import FORMATS, LORA_TARGETS, MAX_LENGTH, MODES, rows_for

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

BUDGET = 64
"""Tokens per packed row: small enough that the test rows fill several rows, some holding two pairs."""


def _llama(vocab: int) -> nn.Module:
    return LlamaForCausalLM(tiny_llama_config(vocab))


_SMALL = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
WINDOW = 8
"""A sliding window shorter than the test sequences, so tokens past it must not see the prompt's start."""


def _qwen2(vocab: int) -> nn.Module:
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, **_SMALL))


def _qwen2_sliding(vocab: int) -> nn.Module:
    """A full-attention layer then a sliding-window one: a mask per layer type."""
    config = Qwen2Config(
        vocab_size=vocab, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, **_SMALL
    )
    assert config.layer_types == ["full_attention", "sliding_attention"]
    return Qwen2ForCausalLM(config)


def _mistral_sliding(vocab: int) -> nn.Module:
    """Every layer a sliding window, one mask for all (Mistral has no layer types)."""
    return MistralForCausalLM(MistralConfig(vocab_size=vocab, sliding_window=WINDOW, **_SMALL))


ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {"llama": _llama, "qwen2": _qwen2}
SLIDING: dict[str, Callable[[int], nn.Module]] = {
    "qwen2-sliding": _qwen2_sliding,
    "mistral-sliding": _mistral_sliding,
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def base_model(request: pytest.FixtureRequest, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[request.param](len(tokenizer)).eval()


def _pairs(
    tokenizer: PreTrainedTokenizerBase, fmt: str, mode: TruncationMode, tmp_path: Path
) -> list[TokenizedPair]:
    examples = read_examples(write_jsonl(tmp_path / "rows.jsonl", rows_for(fmt)[0]))
    return tokenize_examples(tokenizer, examples, max_length=MAX_LENGTH, truncation_mode=mode).pairs


def _with_lora(model: nn.Module) -> nn.Module:
    """A LoRA-wrapped copy whose adapter is not the identity, so the policy differs from the base."""
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    peft = get_peft_model(copy.deepcopy(model), config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return peft


def _logps_and_grads(
    model: nn.Module, run: Callable[[nn.Module], SequenceLogps]
) -> tuple[SequenceLogps, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = run(model)
    weights = torch.linspace(-1.0, 1.0, out.logps.numel())
    (out.logps * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def _packed_logps(model: nn.Module, rows: list[PackedBatch], indices: list[int]) -> SequenceLogps:
    """Each row run on its own, its pairs' results put back in the padded batch's order (`indices`)."""
    outputs = [packed_logps(model, row) for row in rows]
    order = [index for row in rows for index in row.indices]
    pairs = len(indices)
    place = torch.tensor([order.index(i) for i in indices])
    chosen_first = torch.cat([place, place + pairs])

    def gather(field: str) -> torch.Tensor:
        chosen = torch.cat([getattr(out, field).chunk(2)[0] for out in outputs])
        rejected = torch.cat([getattr(out, field).chunk(2)[1] for out in outputs])
        return torch.cat([chosen, rejected])[chosen_first]

    return SequenceLogps(gather("logps"), gather("tokens"), gather("logits_sum"))


@pytest.mark.parametrize("training", ["lora", "full"])
@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_packed_logps_and_gradients_equal_the_padded_ones(
    fmt: str,
    mode: TruncationMode,
    training: str,
    base_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
) -> None:
    pairs = _pairs(tokenizer, fmt, mode, tmp_path)
    _check_packed_equals_padded(
        pairs, base_model, training, tokenizer.pad_token_id, mode, max_length=MAX_LENGTH, budget=BUDGET
    )


@pytest.mark.parametrize("attention", [SDPA, VARLEN])
@pytest.mark.parametrize("training", ["lora", "full"])
@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("architecture", list(SLIDING))
def test_sliding_window_models_get_the_padded_logps_and_gradients(
    architecture: str,
    mode: TruncationMode,
    training: str,
    attention: str,
    tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
) -> None:
    """Rows longer than the window: the packed mask (or varlen's window) cuts keys as the padded one does."""
    torch.manual_seed(0)
    base_model = SLIDING[architecture](len(tokenizer)).eval()
    pairs = _pairs(tokenizer, "standard", mode, tmp_path)
    assert max(len(p.prompt_ids) + len(p.chosen_ids) for p in pairs) > WINDOW
    _check_packed_equals_padded(
        pairs,
        base_model,
        training,
        tokenizer.pad_token_id,
        mode,
        max_length=MAX_LENGTH,
        budget=BUDGET,
        attention=attention,
    )


TOOLS_MAX_LENGTH = 600
"""No pair is cut: cut at the start, every completion keeps only the tool call's opening, the same in all
pairs, and the nearly identical sequences' gradients cancel down to float32 rounding noise."""
TOOLS_BUDGET = 1100


@pytest.mark.parametrize("training", ["lora", "full"])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_packed_rows_with_tools_equal_the_padded_ones(
    mode: TruncationMode, training: str, base_model: nn.Module, tools_model_dir: Path, tmp_path: Path
) -> None:
    """Prompts holding tool definitions (the tiny model with a template that renders tools; same vocab)."""
    tokenizer = AutoTokenizer.from_pretrained(tools_model_dir)
    examples = read_examples(write_jsonl(tmp_path / "rows.jsonl", tool_rows(6, seed=3)))
    pairs = tokenize_examples(tokenizer, examples, max_length=TOOLS_MAX_LENGTH, truncation_mode=mode).pairs
    _check_packed_equals_padded(
        pairs,
        base_model,
        training,
        tokenizer.pad_token_id,
        mode,
        max_length=TOOLS_MAX_LENGTH,
        budget=TOOLS_BUDGET,
    )


def _check_packed_equals_padded(
    pairs: list[TokenizedPair],
    base_model: nn.Module,
    training: str,
    pad_token_id: int,
    mode: TruncationMode,
    *,
    max_length: int,
    budget: int,
    attention: str | None = None,
) -> None:
    padded = collate(pairs, pad_token_id=pad_token_id, max_length=max_length, truncation_mode=mode)
    rows = pack(pairs, max_length=max_length, truncation_mode=mode, token_budget=budget)
    assert len(rows) > 1 and max(row.pairs for row in rows) > 1, "several rows, some holding several pairs"
    assert all(row.input_ids.shape[1] <= budget or row.pairs == 1 for row in rows)
    assert sum(row.input_ids.numel() for row in rows) < padded.num_tokens, "each shared prompt runs once"
    assert sum(row.num_tokens for row in rows) == padded.num_tokens, "throughput counts the unpacked tokens"
    model = _with_lora(base_model) if training == "lora" else copy.deepcopy(base_model)
    if attention is not None:
        set_attention(model, attention)
    for row in rows:
        assert sorted(row.indices) == row.indices, "a row keeps its pairs in batch order"

    padded_model = model
    if attention is not None:
        padded_model = copy.deepcopy(model)
        set_attention(padded_model, SDPA)
    want, want_grads = _logps_and_grads(
        padded_model,
        lambda m: sequence_logps(m, padded.input_ids, padded.attention_mask, padded.completion_mask),
    )
    got, got_grads = _logps_and_grads(model, lambda m: _packed_logps(m, rows, padded.indices))

    assert torch.equal(got.tokens, want.tokens)
    assert (got.logps - want.logps).abs().max().item() < 1e-4
    assert (got.logits_sum - want.logits_sum).abs().max().item() < 1e-4
    assert got_grads.keys() == want_grads.keys() and want_grads
    for name, grad in want_grads.items():
        scale = grad.abs().max().item()
        assert (got_grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-7, name


def test_a_pair_is_laid_out_once_with_the_rejected_branch_after_the_prompt() -> None:
    pair = TokenizedPair(0, prompt_ids=[10, 11, 12], chosen_ids=[20, 21], rejected_ids=[30, 31])
    segment = layout_pair(pair, max_length=64, truncation_mode=TruncationMode.keep_start)
    assert segment.ids == [10, 11, 12, 20, 21, 30, 31]
    assert segment.positions == [0, 1, 2, 3, 4, 3, 4]
    # (predicting offset, target, output): the last prompt token predicts both first completion tokens.
    assert segment.scored == [(2, 20, 0), (3, 21, 0), (2, 30, 1), (5, 31, 1)]
    assert segment.unpacked_tokens == 10

    [batch] = pack([pair, pair], max_length=64, truncation_mode=TruncationMode.keep_start, token_budget=64)
    allowed = batch.attention_bias(torch.float32)[0, 0] == 0
    assert allowed.shape == (14, 14)
    assert allowed[5].nonzero().flatten().tolist() == [0, 1, 2, 5], "rejected sees the prompt, never chosen"
    assert allowed[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert allowed[7].nonzero().flatten().tolist() == [7], "the second pair sees nothing of the first"


def test_keep_end_pairs_whose_prompt_tails_differ_are_not_shared() -> None:
    """keep_end cuts each sequence on its own: a long chosen keeps less prompt than a short rejected."""
    pair = TokenizedPair(0, prompt_ids=[10, 11, 12, 13], chosen_ids=[20, 21, 22, 23], rejected_ids=[30])
    segment = layout_pair(pair, max_length=6, truncation_mode=TruncationMode.keep_end)
    assert segment.ids == [12, 13, 20, 21, 22, 23, 10, 11, 12, 13, 30]
    assert segment.positions == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert segment.parts == [0] * 6 + [1] * 5
    assert segment.scored[0] == (1, 20, 0) and segment.scored[-1] == (9, 30, 1)


@pytest.fixture
def causal_only_attention() -> Iterator[str]:
    """An attention kernel that knows only causal masks: it drops whatever mask it is given."""

    def attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Any,
        **kwargs: Any,
    ) -> Any:
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)

    AttentionInterface.register("causal_only", attention)
    yield "causal_only"
    AttentionInterface._global_mapping.pop("causal_only")


def test_a_model_whose_attention_ignores_the_mask_is_not_packed(
    base_model: nn.Module, tokenizer: PreTrainedTokenizerBase, causal_only_attention: str
) -> None:
    assert packing_unsupported(base_model, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH) is None
    model = copy.deepcopy(base_model)
    model.set_attn_implementation(causal_only_attention)
    reason = packing_unsupported(model, pad_token_id=tokenizer.pad_token_id)
    assert reason is not None and "'causal_only'" in reason and "4D attention mask" in reason


@pytest.fixture
def static_compile() -> Iterator[None]:
    """transformers compiles FlexAttention; on CPU, PyTorch 2.13's dynamic-shape kernel for it does not
    build, so each row length gets a static compile of its own (one row per test keeps that to one)."""
    import torch._dynamo.config

    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        yield


@pytest.mark.slow
@pytest.mark.usefixtures("static_compile")
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_flex_attention_rows_give_the_padded_logps(
    mode: TruncationMode, base_model: nn.Module, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    """The BlockMask route (FlexAttention through transformers' attention interface), forward only: PyTorch
    has no FlexAttention backward on CPU, so gradients through it are for a GPU to check."""
    pairs = _pairs(tokenizer, "standard", mode, tmp_path)
    padded = collate(pairs, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH, truncation_mode=mode)
    rows = pack(pairs, max_length=MAX_LENGTH, truncation_mode=mode, token_budget=2048)
    assert len(rows) == 1 and rows[0].pairs == len(pairs) > 1
    flex = copy.deepcopy(base_model)
    set_attention(flex, FLEX)
    with torch.no_grad():
        want = sequence_logps(base_model, padded.input_ids, padded.attention_mask, padded.completion_mask)
        got = _packed_logps(flex, rows, padded.indices)
    assert torch.equal(got.tokens, want.tokens)
    assert (got.logps - want.logps).abs().max().item() < 1e-4
    assert (got.logits_sum - want.logits_sum).abs().max().item() < 1e-4


@pytest.mark.parametrize("training", ["lora", "full"])
@pytest.mark.parametrize("mode", MODES, ids=str)
def test_varlen_rows_give_the_padded_logps_and_gradients(
    mode: TruncationMode,
    training: str,
    base_model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
) -> None:
    """The varlen route through transformers' attention interface: layout, gathers, GQA and sliding windows,
    with the reference kernel (the CUDA kernel computes the same sequences)."""
    pairs = _pairs(tokenizer, "conversational", mode, tmp_path)
    _check_packed_equals_padded(
        pairs,
        base_model,
        training,
        tokenizer.pad_token_id,
        mode,
        max_length=MAX_LENGTH,
        budget=BUDGET,
        attention=VARLEN,
    )


def test_varlen_sequences_of_a_row() -> None:
    """A shared pair: `prompt | chosen` on its own, then rejected over the prompt's keys again; an unshared
    pair: two plain causal sequences."""
    shared = TokenizedPair(0, prompt_ids=[10, 11, 12], chosen_ids=[20, 21], rejected_ids=[30, 31])
    unshared = TokenizedPair(1, prompt_ids=[40, 41, 42], chosen_ids=[50], rejected_ids=[60, 61])
    pack_args: dict[str, Any] = {
        "max_length": 4,
        "truncation_mode": TruncationMode.keep_end,
        "token_budget": 64,
    }
    assert (
        layout_pair(unshared, max_length=4, truncation_mode=TruncationMode.keep_end).parts
        == [0] * 4 + [1] * 4
    )
    [row] = pack([shared, unshared], **pack_args)
    layout = row.varlen_layout

    ids = row.input_ids[0]
    queries = [ids[i].tolist() for i in layout.query_index.split(layout.query_lengths)]
    keys = [ids[i].tolist() for i in layout.key_index.split(layout.key_lengths)]
    assert queries == [[11, 12, 20, 21], [30, 31], [40, 41, 42, 50], [41, 42, 60, 61]]
    assert keys == [[11, 12, 20, 21], [11, 12, 30, 31], [40, 41, 42, 50], [41, 42, 60, 61]]
    assert layout.cu_q.tolist() == [0, 4, 6, 10, 14] and layout.cu_k.tolist() == [0, 4, 8, 12, 16]
    assert torch.equal(layout.query_index[layout.restore], torch.arange(ids.numel()))


def test_attention_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_attention(AttentionKernel.auto, cpu) == (SDPA, None), "auto is SDPA on CPU, silently"
    implementation, why = choose_attention(AttentionKernel.flex, cpu)
    assert implementation == SDPA and why is not None and "backward" in why
    implementation, why = choose_attention(AttentionKernel.varlen, cpu)
    assert implementation == SDPA and why is not None and "CUDA only" in why
    assert choose_attention(AttentionKernel.sdpa, cuda) == (SDPA, None)
    assert choose_attention(AttentionKernel.auto, cuda) == (VARLEN if cuda_varlen_available() else FLEX, None)
    assert attention_from_env({ATTENTION_ENV: "varlen"}) is AttentionKernel.varlen
    assert attention_from_env({}) is AttentionKernel.auto
    assert attention_from_env({ATTENTION_ENV: "Flex"}) is AttentionKernel.flex
    with pytest.raises(BadInputError, match="ATTENTION='flash' is not one of auto, sdpa, flex"):
        attention_from_env({ATTENTION_ENV: "flash"})


def test_a_sliding_window_the_packed_mask_would_leave_out_is_caught(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    """Mistral applies its window whatever `use_sliding_window` says; a config saying false makes the packed
    mask leave the window out, and the probe (a pair longer than the window) sees the difference."""
    torch.manual_seed(0)
    model = _mistral_sliding(len(tokenizer)).eval()
    assert packing_unsupported(model, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH) is None
    model.config.use_sliding_window = False
    assert sliding_window(model.config) is None
    assert packing_unsupported(model, pad_token_id=tokenizer.pad_token_id, max_length=WINDOW) is None, (
        "the window never cuts a sequence of max_length tokens"
    )
    reason = packing_unsupported(model, pad_token_id=tokenizer.pad_token_id, max_length=MAX_LENGTH)
    assert reason is not None and "differ from padded" in reason


def test_layer_types_a_packed_mask_cannot_express_turn_packing_off(base_model: nn.Module) -> None:
    model = copy.deepcopy(base_model)
    model.config.layer_types = ["full_attention", "chunked_attention"]
    reason = packing_unsupported(model, pad_token_id=0)
    assert reason is not None and "chunked_attention" in reason
