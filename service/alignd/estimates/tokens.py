"""Token counts with the trainer's own code: its tokenizer loading, pair tokenization and drop rules
(`alignd_trainer.model.load_tokenizer`, `alignd_trainer.data.tokenize_examples`), and for chat (SFT) rows
its conversation tokenization, truncation and drop rule (`alignd_trainer.chat_data.tokenize_chat`), so an
estimate counts what a run would.

Those modules need the `trainer` extra (torch, transformers), and the API server image does not even
hold the `alignd_trainer` package; they are imported when the first estimate needs them, not at server
start, so a server installed without them still runs everything else and answers estimates with 501
naming the extra.
"""

import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

from alignd.contract import PreferenceExample, TruncationMode
from alignd.contract.chat import ChatExample
from alignd.errors import InvalidRequest, NotInstalled

TRAINER_EXTRA = "pip install 'alignd[trainer]'"
BATCH_ROWS = 1024
"""Rows whose plain texts go to the tokenizer in one batch call."""
_LOCK = threading.Lock()
"""A fast tokenizer refuses concurrent calls ("Already borrowed"), and tokenizing takes the CPU anyway:
one estimate tokenizes at a time per process."""


def trainer_installed() -> bool:
    try:
        _trainer()
    except NotInstalled:
        return False
    return True


def _trainer() -> tuple[ModuleType, ModuleType]:
    """`alignd_trainer.data` and `alignd_trainer.model`, or NotInstalled (501) naming the extra."""
    try:
        # Imported here, not at the top: torch and transformers load only on a server that estimates.
        from alignd_trainer import data, model
    except ImportError as exc:
        raise NotInstalled(
            "estimates tokenize with the model's tokenizer, which needs the trainer extra on the API "
            f"server ({exc}): {TRAINER_EXTRA}"
        ) from None
    return data, model


@dataclass(frozen=True)
class TokenCounts:
    """Per usable pair: tokens of the prompt, the chosen and the rejected completion (before truncation)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    dropped_prompt_too_long: int
    dropped_low_agreement: int


def load_tokenizer(location: str) -> Any:
    """The trainer's tokenizer for a model location (a directory or a hub id), cached per process."""
    _trainer()
    if location.startswith("s3://"):
        raise InvalidRequest(
            f"the model's files are in object storage ({location}); estimates read tokenizers from a "
            "directory or the hub only",
            param="model",
        )
    return _cached_tokenizer(location)


@lru_cache(maxsize=4)
def _cached_tokenizer(location: str) -> Any:
    _, model = _trainer()
    try:
        return model.load_tokenizer(location)
    except model.BadInputError as exc:  # alignd_trainer.errors's, imported there
        raise InvalidRequest(str(exc), param="model") from None
    except Exception as exc:  # transformers raises ValueError, KeyError, ... for a directory it cannot read
        raise InvalidRequest(
            f"cannot load the tokenizer of {location}: {str(exc).strip().splitlines()[0]}", param="model"
        ) from None


def count_tokens(
    tokenizer: Any,
    examples: Sequence[PreferenceExample],
    *,
    max_length: int,
    truncation_mode: TruncationMode,
    agreement_threshold: float | None,
    param: str = "training_file",
) -> TokenCounts:
    """Tokenize like the trainer (`tokenize_examples`), a batch of rows at a time: their plain texts go
    to the tokenizer in one call first (`_Prefetched`), the trainer's code then runs on the results."""
    data, _ = _trainer()
    prompt: list[int] = []
    chosen: list[int] = []
    rejected: list[int] = []
    too_long = low_agreement = 0
    with _LOCK:
        for chunk in _chunks(examples, BATCH_ROWS):
            try:
                tokenized = data.tokenize_examples(
                    _Prefetched(tokenizer, chunk),
                    chunk,
                    max_length=max_length,
                    truncation_mode=truncation_mode,
                    agreement_threshold=agreement_threshold,
                )
            except data.BadInputError as exc:  # a row the chat template cannot render, as the trainer says
                raise InvalidRequest(f"{param}: {exc}", param=param) from None
            for pair in tokenized.pairs:
                prompt.append(len(pair.prompt_ids))
                chosen.append(len(pair.chosen_ids))
                rejected.append(len(pair.rejected_ids))
            too_long += tokenized.dropped_prompt_too_long
            low_agreement += tokenized.dropped_low_agreement
    return TokenCounts(prompt, chosen, rejected, too_long, low_agreement)


@dataclass(frozen=True)
class ChatTokenCounts:
    """Per conversation the trainer keeps: its tokens and trained (assistant) tokens before truncation,
    and the tokens a step runs and trains on after it. Plus the conversations it cuts or drops."""

    tokens: list[int]
    trained: list[int]
    kept_tokens: list[int]
    kept_trained: list[int]
    truncated: int
    """Conversations longer than `max_length` tokens, the dropped ones among them."""
    dropped_by_truncation: int
    """Conversations whose trained tokens truncation cut off entirely: the trainer skips them."""
    dropped_untrained: int
    """All the conversations the trainer skips: no trained token, before or after truncation."""


def count_chat_tokens(
    tokenizer: Any,
    examples: Sequence[ChatExample],
    *,
    max_length: int,
    truncation_mode: TruncationMode,
    param: str = "training_file",
) -> ChatTokenCounts:
    """Tokenize each conversation like the SFT trainer: `tokenize_chat` renders it through the chat
    template and marks the trained turns; run uncut here (the counts before truncation), then cut with the
    trainer's `truncate_sequence` at `max_length`, which is all `tokenize_chat` does with it; a row is
    kept when `loss_tokens` is not 0, `tokenize_chats`'s rule."""
    chat_data = _chat_data()
    data, _ = _trainer()
    tokens: list[int] = []
    trained: list[int] = []
    kept_tokens: list[int] = []
    kept_trained: list[int] = []
    truncated = by_truncation = untrained = 0
    with _LOCK:
        for index, example in enumerate(examples):
            try:
                whole = chat_data.tokenize_chat(
                    tokenizer, example, index, max_length=sys.maxsize, truncation_mode=truncation_mode
                )
            except data.BadInputError as exc:  # no chat template, a row it cannot render
                raise InvalidRequest(f"{param}: line {example.line}: {exc}", param=param) from None
            ids, mask = data.truncate_sequence(whole.input_ids, whole.loss_mask, max_length, truncation_mode)
            kept = chat_data.TokenizedChat(index=index, input_ids=ids, loss_mask=mask)
            cut = len(whole.input_ids) > max_length
            truncated += cut
            if not kept.loss_tokens:
                untrained += 1
                by_truncation += cut and whole.loss_tokens > 0
                continue
            tokens.append(len(whole.input_ids))
            trained.append(whole.loss_tokens)
            kept_tokens.append(len(ids))
            kept_trained.append(kept.loss_tokens)
    return ChatTokenCounts(tokens, trained, kept_tokens, kept_trained, truncated, by_truncation, untrained)


def _chat_data() -> ModuleType:
    _trainer()  # NotInstalled (501) naming the extra
    from alignd_trainer import chat_data

    return chat_data


class _Prefetched:
    """The tokenizer, answering the trainer's plain-text calls (`tokenizer(text=...)`) from one batch call
    made beforehand over the texts the rows will ask for. Anything else (chat templates, other arguments,
    a text not prefetched) goes to the tokenizer itself, so the results never differ from the trainer's:
    the prefetch only saves time."""

    def __init__(self, tokenizer: Any, examples: Sequence[PreferenceExample]) -> None:
        self._tokenizer = tokenizer
        texts = list(dict.fromkeys(_plain_texts(examples, tokenizer.eos_token)))
        ids = tokenizer(texts)["input_ids"] if texts else []
        self._ids: dict[str, list[int]] = dict(zip(texts, ids, strict=True))

    def __call__(self, text: Any = None, **kwargs: Any) -> Any:
        if not kwargs and isinstance(text, str) and text in self._ids:
            return {"input_ids": self._ids[text]}
        return self._tokenizer(text=text, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _plain_texts(examples: Sequence[PreferenceExample], eos: str) -> Iterator[str]:
    """What the trainer tokenizes for a standard-format row: the prompt, and the prompt followed by each
    completion ending in EOS. Only a guess for the prefetch: a miss costs time, not correctness."""
    for example in examples:
        prompt, chosen, rejected = example.prompt, example.chosen, example.rejected
        if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
            yield prompt
            for completion in (chosen, rejected):
                yield prompt + (completion if completion.endswith(eos) else completion + eos)


def _chunks(items: Sequence[PreferenceExample], size: int) -> Iterator[Sequence[PreferenceExample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def model_parameters(location: str) -> int | None:
    """P of the model (parameters without the input embedding, bench/README.md's P), from its config
    alone: the model is built on torch's meta device, so no weights are read or allocated. None when the
    config cannot be read or built."""
    _trainer()
    return _cached_parameters(location)


@lru_cache(maxsize=16)
def _cached_parameters(location: str) -> int | None:
    # The trainer extra's packages, which `model_parameters` has checked are there (see `_trainer`).
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(location)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # any config transformers cannot build: durations go unscaled, and say so
        return None
    total = sum(parameter.numel() for parameter in model.parameters())
    embedding = model.get_input_embeddings()
    return int(total - (embedding.weight.numel() if embedding is not None else 0))
