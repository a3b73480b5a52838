"""Chat (SFT) data: JSONL file -> validated conversations -> token ids with a loss mask -> padded batches.

The loss mask marks the tokens of every assistant turn that is trained on (OpenAI's rule: all assistant
turns unless `"weight": 0`). Each turn's span is found by rendering the conversation up to that turn
through the chat template: it starts where the rendering of the turns before it plus the generation
prompt stops matching the full conversation, and ends where the rendering through the turn itself does.
So the mask holds the turn's content and whatever the template closes it with (the end-of-turn token),
never the role header, whatever the template. Rows carrying `tools` render them through the template.
Truncation to max_length happens here, so each row's count of trained tokens is known up front.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignd.contract import TruncationMode
from alignd.contract.chat import ChatExample, parse_chat_line
from alignd_trainer.data import Batch, read_rows, truncate_sequence
from alignd_trainer.errors import BadInputError


def read_chats(path: str | Path) -> list[ChatExample]:
    """A file's chat rows."""
    return read_rows(path, parse_chat_line)


@dataclass(frozen=True)
class TokenizedChat:
    index: int
    """Position of the row among the file's examples (0-based)."""
    input_ids: list[int]
    loss_mask: list[int]
    """1 where the token is a trained assistant token (the model learns to predict it)."""
    weight: float = 1.0

    @property
    def loss_tokens(self) -> int:
        """Trained tokens; position 0 has no prefix to predict it from (`sequence_logps` scores 1 on)."""
        return sum(self.loss_mask[1:])


@dataclass(frozen=True)
class TokenizedChats:
    pairs: list[TokenizedChat]
    """Named like `TokenizedData.pairs` so the training loop indexes both alike; one item per row."""
    dropped_untrained: int
    """Rows with no trained assistant token (none in the row, or all cut off by truncation)."""


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, **kwargs: Any) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise BadInputError(
            "chat (SFT) data needs a chat template, and the base model's tokenizer has none; add one to "
            "tokenizer_config.json"
        )
    extra = {"tools": tools} if tools else {}
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True, **extra, **kwargs)
    return list(out["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def tokenize_chat(
    tokenizer: Any, example: ChatExample, index: int, *, max_length: int, truncation_mode: TruncationMode
) -> TokenizedChat:
    messages, tools = example.messages, example.tools
    ids = _render(tokenizer, messages, tools)
    mask = [0] * len(ids)
    for turn, trained in enumerate(example.trained):
        if not trained:
            continue
        start = _common_prefix(_render(tokenizer, messages[:turn], tools, add_generation_prompt=True), ids)
        end = _common_prefix(_render(tokenizer, messages[: turn + 1], tools), ids)
        mask[start:end] = [1] * max(0, end - start)
    ids, mask = truncate_sequence(ids, mask, max_length, truncation_mode)
    return TokenizedChat(index=index, input_ids=ids, loss_mask=mask)


def tokenize_chats(
    tokenizer: Any, examples: Sequence[ChatExample], *, max_length: int, truncation_mode: TruncationMode
) -> TokenizedChats:
    kept: list[TokenizedChat] = []
    dropped = 0
    for index, example in enumerate(examples):
        item = tokenize_chat(
            tokenizer, example, index, max_length=max_length, truncation_mode=truncation_mode
        )
        if item.loss_tokens:
            kept.append(item)
        else:
            dropped += 1
    return TokenizedChats(kept, dropped)


def collate_chats(items: Sequence[TokenizedChat], *, pad_token_id: int) -> Batch:
    """Right-padded rows; `completion_mask` is the loss mask (what `sequence_logps` sums over)."""
    width = max(len(item.input_ids) for item in items)
    input_ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    loss_mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        input_ids[row, : len(item.input_ids)] = torch.tensor(item.input_ids, dtype=torch.long)
        attention[row, : len(item.input_ids)] = 1
        loss_mask[row, : len(item.loss_mask)] = torch.tensor(item.loss_mask, dtype=torch.long)
    weights = torch.tensor([item.weight for item in items], dtype=torch.float32)
    return Batch(input_ids, attention, loss_mask, weights, [item.index for item in items])
