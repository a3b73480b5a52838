"""Chat generation: batched, left-padded, only the new text, deterministic for a seed; base models,
LoRA adapters and full-weight directories; and a real chat model that knows its geography."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignd_trainer.errors import BadInputError
from alignd_trainer.generation import ChatGenerator, Sampling

pytestmark = pytest.mark.usefixtures("torch_one_thread")

QUESTIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a fruit, please, now"}],
    [{"role": "user", "content": "which animal barks at the moon every single night?"}],
]
GREEDY = Sampling(temperature=0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> ChatGenerator:
    return ChatGenerator.load(tiny_model_dir)


def _reference_greedy(tiny_model_dir: Path, conversation: list[dict[str, str]], max_new_tokens: int) -> str:
    """transformers' own greedy decoding of one unpadded prompt, decoded the plain way."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


def test_greedy_batches_give_each_prompt_its_unpadded_reply(
    tiny: ChatGenerator, tiny_model_dir: Path
) -> None:
    """Left padding: a prompt's greedy reply in a batch of longer and shorter prompts is the reply
    transformers gives it alone, and only the new text comes back (no prompt echo)."""
    replies = tiny.generate(QUESTIONS, GREEDY, batch_size=3)

    assert all(replies)
    assert replies == [_reference_greedy(tiny_model_dir, q, GREEDY.max_new_tokens) for q in QUESTIONS]
    assert tiny.generate(QUESTIONS, GREEDY, batch_size=1) == replies


def test_sampling_is_deterministic_for_a_seed_and_varies_across_seeds(tiny: ChatGenerator) -> None:
    sampling = Sampling(temperature=1.0, max_new_tokens=16, seed=7)
    first = tiny.generate(QUESTIONS * 2, sampling, batch_size=4)

    torch.manual_seed(12345)  # the global RNG plays no part
    assert tiny.generate(QUESTIONS * 2, sampling, batch_size=4) == first
    other_seed = Sampling(temperature=1.0, max_new_tokens=16, seed=8)
    assert tiny.generate(QUESTIONS * 2, other_seed, batch_size=4) != first


def test_top_p_near_zero_is_greedy(tiny: ChatGenerator) -> None:
    """Nucleus sampling keeps at least the most likely token; with a tiny top_p it keeps only that one."""
    sampled = tiny.generate(QUESTIONS, Sampling(temperature=1.0, top_p=1e-6, max_new_tokens=12, seed=3))

    assert sampled == tiny.generate(QUESTIONS, GREEDY)


def test_completions_count_tokens_and_say_why_they_ended(tiny: ChatGenerator) -> None:
    [completion] = tiny.complete(QUESTIONS[:1], Sampling(temperature=1.0, max_new_tokens=5, seed=1))

    prompt = tiny.tokenizer.apply_chat_template(QUESTIONS[0], add_generation_prompt=True, tokenize=False)
    assert completion.prompt_tokens == len(tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= completion.completion_tokens <= 5
    if completion.finish_reason == "length":
        assert completion.completion_tokens == 5
    else:
        assert completion.finish_reason == "stop"


def test_lora_adapter_and_full_weights_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An adapter directory (as LoRA jobs write it) changes the replies to what the adapted model
    says; a full-weight directory loads through model_dir alone."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(base, config)
    adapted.save_pretrained(tmp_path / "adapter")
    merged = adapted.merge_and_unload()
    merged.save_pretrained(tmp_path / "full")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "full")

    adapter = ChatGenerator.load(tiny_model_dir, adapter_dir=tmp_path / "adapter")
    with_adapter = adapter.generate(QUESTIONS, GREEDY)
    full = ChatGenerator.load(tmp_path / "full").generate(QUESTIONS, GREEDY)

    assert with_adapter == full
    assert with_adapter != ChatGenerator.load(tiny_model_dir).generate(QUESTIONS, GREEDY)


def test_a_directory_without_an_adapter_config_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"no adapter_config\.json"):
        ChatGenerator.load(tiny_model_dir, adapter_dir=tmp_path)


def test_smollm2_knows_the_capital_of_france(smollm2_dir: Path) -> None:
    """The converted SmolLM2 directory is a working chat model: loaded from it alone, greedy decoding
    answers a factual question, also inside a batch with another prompt."""
    generator = ChatGenerator.load(smollm2_dir)
    questions = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Write one sentence about the sea."}],
    ]

    replies = generator.generate(questions, Sampling(temperature=0, max_new_tokens=24), batch_size=2)

    assert "Paris" in replies[0]
    assert replies[1].strip() and "<|im_end|>" not in replies[1]
