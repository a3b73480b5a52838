"""Chat replies from a base model, a base + LoRA adapter, or a fully fine-tuned model.

What evaluation runs and `/v1/chat/completions` generate with. Prompts are batched with left
padding (so every row's new tokens start at the same column), rendered with the tokenizer's chat
template and `add_generation_prompt`, and only the new text comes back.

Determinism: sampling draws from one `torch.Generator` seeded with `Sampling.seed`, owned by the
call, never from torch's global RNG, so concurrent generations in other threads cannot shift it.
The same conversations, `Sampling` and `batch_size` on the same model, device and dtype give the
same replies. A different `batch_size` may change them: batching changes the padding, and with it
the floating-point sums, which can flip a near tie. `temperature=0` is greedy decoding.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from torch import nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from alignd_trainer.errors import BadInputError
from alignd_trainer.model import load_causal_lm, load_tokenizer, resolve_device

Conversation = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    """0 means greedy; otherwise logits are divided by it before sampling (typical 0.2-1.5)."""
    max_new_tokens: int = 256
    """Upper bound on the tokens of each reply; a reply ends earlier at the end-of-turn token."""
    top_p: float = 1.0
    """Nucleus sampling: draw only from the smallest set of tokens whose probability reaches top_p."""
    seed: int = 0
    """Seeds the call's own generator: same inputs, seed and batch size, same replies."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


class SeededSampler(LogitsProcessor):
    """Samples the next token with its own generator and leaves only that token possible.

    transformers' sampling draws from torch's global RNG; running generation greedily behind this
    processor keeps the draw on a generator the caller owns."""

    def __init__(self, sampling: Sampling, generator: torch.Generator) -> None:
        self.temperature = sampling.temperature
        self.top_p = sampling.top_p
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
            sorted_probs[(sorted_probs.cumsum(dim=-1) - sorted_probs) >= self.top_p] = 0
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        token = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(scores.device)
        only = torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)
        return only  # type: ignore[return-value]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    """New tokens including the end-of-turn token when the reply ended with one."""
    finish_reason: Literal["stop", "length"]


class ChatGenerator:
    """A loaded model and its tokenizer, generating chat replies. Not thread-safe: callers that share
    one (a server) hold a lock around `generate`."""

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise BadInputError("the model's tokenizer has no chat template; chat generation needs one")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_token_ids = _eos_token_ids(model, tokenizer)

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        *,
        adapter_dir: Path | str | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> "ChatGenerator":
        """A model directory (a base, or full fine-tuned weights with their tokenizer), optionally
        with a PEFT LoRA adapter directory (what alignd's LoRA jobs write) on top of it.

        Default device: the first GPU if there is one, else the CPU; default dtype: bf16 on GPUs that
        support it, float32 otherwise."""
        target = torch.device(device) if device else resolve_device()
        chosen_dtype = dtype or _default_dtype(target)
        tokenizer = load_tokenizer(str(model_dir))
        model = load_causal_lm(str(model_dir), dtype=chosen_dtype, device=target)
        if adapter_dir is not None:
            if not (Path(adapter_dir) / "adapter_config.json").exists():
                raise BadInputError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context_length(self) -> int:
        """Most tokens (prompt and reply) the model takes: its config's max_position_embeddings."""
        config = getattr(self.model, "config", None)
        return int(getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length)

    def prompt_tokens(self, conversation: Conversation) -> int:
        """How many tokens a conversation's prompt is (chat template and generation prompt included)."""
        return len(self.tokenizer(self._render(conversation), add_special_tokens=False)["input_ids"])

    def generate(
        self, conversations: Sequence[Conversation], sampling: Sampling, *, batch_size: int = 8
    ) -> list[str]:
        """One reply per conversation, in order: only the new text, special tokens removed."""
        return [c.text for c in self.complete(conversations, sampling, batch_size=batch_size)]

    @torch.no_grad()
    def complete(
        self, conversations: Sequence[Conversation], sampling: Sampling, *, batch_size: int = 8
    ) -> list[Completion]:
        """`generate`, with each reply's token counts and why it ended (what an API reports)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(sampling.seed)
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,  # sampling, when asked for, happens in SeededSampler
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_token_ids,
        )
        processors = LogitsProcessorList(
            [SeededSampler(sampling, generator)] if sampling.temperature > 0 else []
        )
        completions: list[Completion] = []
        for start in range(0, len(conversations), batch_size):
            texts = [self._render(c) for c in conversations[start : start + batch_size]]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.device)
            output = self.model.generate(  # type: ignore[operator]
                **inputs, generation_config=config, logits_processor=processors
            )
            prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
            new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
            for prompt_length, tokens in zip(prompt_lengths, new_tokens, strict=True):
                completions.append(self._completion(tokens, prompt_length))
        return completions

    def _completion(self, tokens: list[int], prompt_length: int) -> Completion:
        """Cut a row's new tokens at its first end token (later columns are padding)."""
        end = next((i for i, t in enumerate(tokens) if t in self.eos_token_ids), None)
        kept = tokens if end is None else tokens[: end + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(
            text=text,
            prompt_tokens=int(prompt_length),
            completion_tokens=len(kept),
            finish_reason="length" if end is None else "stop",
        )

    def _render(self, conversation: Conversation) -> str:
        text: str = self.tokenizer.apply_chat_template(
            [dict(m) for m in conversation], add_generation_prompt=True, tokenize=False
        )
        return text


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """The tokenizer's end token and whatever the model's generation config also stops on."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)
