"""A tiny random-init Llama-style model with a tokenizer trained on the fly.

Tests, the demo and CPU benchmarks use it so nothing is ever downloaded: the directory it
writes loads with `AutoModelForCausalLM` / `AutoTokenizer` like any hub checkpoint.
"""

import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from alignd_trainer.synthetic import corpus

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOOLS_CHAT_TEMPLATE = (
    # Qwen2.5's layout: tools as JSON lines inside <tools> in the system turn, calls as <tool_call> JSON,
    # tool answers as <tool_response> blocks in a user turn, the arguments rendered as a JSON object.
    # Newlines are written as {{ nl }}: transformers renders with trim_blocks, which eats one after a tag.
    "{% set nl = '\\n' %}{{ bos_token }}"
    "{% if tools %}<|system|>{{ nl }}"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}{{ nl }}{{ nl }}{% endif %}"
    "# Tools{{ nl }}{{ nl }}You may call one or more functions to assist with the user query.{{ nl }}<tools>"
    "{% for tool in tools %}{{ nl }}{{ tool | tojson }}{% endfor %}{{ nl }}</tools>{{ nl }}"
    "For each call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> tags.{{ eos_token }}{{ nl }}"
    "{% elif messages[0].role == 'system' %}"
    "<|system|>{{ nl }}{{ messages[0].content }}{{ eos_token }}{{ nl }}"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' or (m.role == 'system' and not loop.first) %}"
    "<|{{ m.role }}|>{{ nl }}{{ m.content }}{{ eos_token }}{{ nl }}"
    "{% elif m.role == 'assistant' %}<|assistant|>{{ nl }}{% if m.content %}{{ m.content }}{% endif %}"
    "{% for call in m.tool_calls or [] %}"
    "{% if m.content or not loop.first %}{{ nl }}{% endif %}"
    '<tool_call>{{ nl }}{"name": "{{ call.function.name }}", '
    '"arguments": {{ call.function.arguments | tojson }}}'
    "{{ nl }}</tool_call>"
    "{% endfor %}{{ eos_token }}{{ nl }}"
    "{% elif m.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|user|>{% endif %}"
    "{{ nl }}<tool_response>{{ nl }}{{ m.content }}{{ nl }}</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ eos_token }}{{ nl }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{{ nl }}{% endif %}"
)
"""A chat template that renders tools, for tests of function-calling rows on the tiny model."""
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE, like Llama 3 / GPT-2, so merges across the prompt/completion boundary happen."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(vocab_size: int, *, hidden: int = 64, layers: int = 2, heads: int = 4) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Write a random-init model + tokenizer to `out_dir` and return the path."""
    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus())
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden=hidden, layers=layers))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def with_chat_template(model_dir: str | Path, out_dir: str | Path, chat_template: str) -> Path:
    """A copy of the model at `model_dir` in `out_dir` whose tokenizer has `chat_template` instead."""
    out = Path(out_dir)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(out)
    return out
