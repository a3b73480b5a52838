"""Preference data: JSONL file -> validated examples -> token ids -> padded batches.

Tokenization follows TRL 1.16's DPOTrainer exactly, so results compare one to one: prompt
and prompt+completion are tokenized jointly and the completion starts where the two token
sequences diverge; string completions get the EOS token appended; truncation to max_length
happens per sequence in the collator. A row's tools go to the chat template with every render
(`apply_chat_template(..., tools=...)`, as TRL passes a row's `tools` column), and OpenAI tool
calls are converted to the template's shape (`contract.tools.template_messages`).
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import torch

from alignd.contract import DataFormat, PreferenceExample, RowError, TruncationMode, parse_preference_line
from alignd.contract.tools import PROBE_MESSAGES, PROBE_TOOL, renders_probe, template_messages, uses_tools
from alignd_trainer.errors import BadInputError

T = TypeVar("T")


class DataError(BadInputError):
    reason = "InvalidData"

    def __init__(self, path: str | Path, error: RowError) -> None:
        super().__init__(f"{Path(path).name} {error}")
        self.row_error = error


def read_rows(path: str | Path, parse: Callable[[bytes, int], T]) -> list[T]:
    """Every non-blank line through `parse(line, number)` before any training starts; the first bad
    line, a missing file or a file without rows fails the run as bad input naming the file."""
    rows: list[T] = []
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    rows.append(parse(raw.rstrip(b"\r\n"), number))
                except RowError as error:
                    raise DataError(path, error) from None
    except FileNotFoundError:
        raise BadInputError(f"data file not found: {path}") from None
    if not rows:
        raise DataError(path, RowError(1, None, "the file has no rows"))
    return rows


def read_examples(path: str | Path) -> list[PreferenceExample]:
    """A file's preference rows, all in the format its first row has."""
    fmt: DataFormat | None = None

    def parse(line: bytes, number: int) -> PreferenceExample:
        nonlocal fmt
        example = parse_preference_line(line, number, fmt)
        fmt = example.format
        return example

    return read_rows(path, parse)


@dataclass(frozen=True)
class TokenizedPair:
    index: int
    """Position of the row among the file's examples (0-based), kept for scoring output."""
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def _encode(tokenizer: Any, text: Any, **template_kwargs: Any) -> list[int]:
    if isinstance(text, list):
        if not getattr(tokenizer, "chat_template", None):
            raise BadInputError(
                "conversational data needs a chat template, and the base model's tokenizer has "
                "none; add one to tokenizer_config.json or use the standard format"
            )
        out = tokenizer.apply_chat_template(text, tokenize=True, return_dict=True, **template_kwargs)
        return list(out["input_ids"])
    return list(tokenizer(text=text)["input_ids"])


def tokenize_example(tokenizer: Any, example: PreferenceExample, index: int) -> TokenizedPair:
    try:
        return _tokenize_example(tokenizer, example, index)
    except jinja2.TemplateError as exc:  # `raise_exception` in a template, or what it cannot render
        model = getattr(tokenizer, "name_or_path", "") or "the base model"
        raise BadInputError(
            f"line {example.line}: the chat template of {model} cannot render this row: {exc}"
        ) from None


def _tokenize_example(tokenizer: Any, example: PreferenceExample, index: int) -> TokenizedPair:
    prompt, chosen, rejected = example.prompt, example.chosen, example.rejected
    if isinstance(prompt, list):
        assert isinstance(chosen, list) and isinstance(rejected, list)
        prompt, chosen, rejected = map(template_messages, (prompt, chosen, rejected))
        tools = example.tools
        prompt_ids = _encode(tokenizer, prompt, add_generation_prompt=True, tools=tools)
        chosen_full = _encode(tokenizer, prompt + chosen, tools=tools)
        rejected_full = _encode(tokenizer, prompt + rejected, tools=tools)
    else:
        eos = tokenizer.eos_token
        assert isinstance(chosen, str) and isinstance(rejected, str)
        chosen = chosen if chosen.endswith(eos) else chosen + eos
        rejected = rejected if rejected.endswith(eos) else rejected + eos
        prompt_ids = _encode(tokenizer, prompt)
        chosen_full = _encode(tokenizer, prompt + chosen)
        rejected_full = _encode(tokenizer, prompt + rejected)
    prompt_len = min(
        _common_prefix_length(prompt_ids, chosen_full), _common_prefix_length(prompt_ids, rejected_full)
    )
    return TokenizedPair(
        index=index,
        prompt_ids=prompt_ids[:prompt_len],
        chosen_ids=chosen_full[prompt_len:],
        rejected_ids=rejected_full[prompt_len:],
        weight=example.weight,
    )


class ToolsNotRendered(BadInputError):
    reason = "ToolsNotSupported"


def check_renders_tools(tokenizer: Any, examples: Sequence[PreferenceExample]) -> None:
    """Refuse rows with tools when the chat template would drop the tool definitions (the job would
    train on prompts other than the ones the rows describe). The control plane runs the same probe
    at job creation where it can read the template; this covers every other model location."""
    first = next((e for e in examples if uses_tools(e.tools, e.prompt, e.chosen, e.rejected)), None)
    if first is None:
        return
    try:
        rendered = tokenizer.apply_chat_template(
            PROBE_MESSAGES, tools=[PROBE_TOOL], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # a template error of any kind means the same: no tools
        problem = f"raises {type(exc).__name__}: {exc}"
    else:
        if renders_probe(rendered):
            return
        problem = "leaves tool definitions, calls or answers out"
    model = getattr(tokenizer, "name_or_path", "") or "the base model"
    raise ToolsNotRendered(
        f"line {first.line} uses tools, but the chat template of {model} {problem}; train on a model "
        "whose chat template renders tools, or remove the tools from the rows"
    )


@dataclass(frozen=True)
class TokenizedData:
    pairs: list[TokenizedPair]
    dropped_prompt_too_long: int
    dropped_low_agreement: int


def tokenize_examples(
    tokenizer: Any,
    examples: Sequence[PreferenceExample],
    *,
    max_length: int,
    truncation_mode: TruncationMode,
    agreement_threshold: float | None = None,
) -> TokenizedData:
    """Tokenize all rows, dropping those whose prompt alone fills max_length (keep_start) or whose
    annotator agreement is below the threshold; the counts are reported as warnings."""
    check_renders_tools(tokenizer, examples)
    pairs: list[TokenizedPair] = []
    too_long = low_agreement = 0
    for index, example in enumerate(examples):
        if (
            agreement_threshold is not None
            and example.agreement is not None
            and example.agreement < agreement_threshold
        ):
            low_agreement += 1
            continue
        pair = tokenize_example(tokenizer, example, index)
        if truncation_mode is TruncationMode.keep_start and len(pair.prompt_ids) >= max_length:
            too_long += 1
            continue
        pairs.append(pair)
    return TokenizedData(pairs, too_long, low_agreement)


@dataclass(frozen=True)
class Batch:
    """Chosen sequences first, then rejected: rows [0, B) and [B, 2B) of every tensor."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    weights: torch.Tensor
    indices: list[int]

    @property
    def pairs(self) -> int:
        return len(self.indices)

    @property
    def num_tokens(self) -> int:
        """Non-pad tokens of the chosen and rejected rows (the prompt counted in both)."""
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.completion_mask.to(device, non_blocking=True),
            self.weights.to(device, non_blocking=True),
            self.indices,
        )


def truncate_sequence(
    ids: list[int], mask: list[int], max_length: int, mode: TruncationMode
) -> tuple[list[int], list[int]]:
    if len(ids) <= max_length:
        return ids, mask
    if mode is TruncationMode.keep_start:
        return ids[:max_length], mask[:max_length]
    return ids[-max_length:], mask[-max_length:]


def collate(
    pairs: Sequence[TokenizedPair], *, pad_token_id: int, max_length: int, truncation_mode: TruncationMode
) -> Batch:
    sequences: list[tuple[list[int], list[int]]] = []
    for side in ("chosen_ids", "rejected_ids"):
        for pair in pairs:
            completion: list[int] = getattr(pair, side)
            ids = pair.prompt_ids + completion
            mask = [0] * len(pair.prompt_ids) + [1] * len(completion)
            sequences.append(truncate_sequence(ids, mask, max_length, truncation_mode))
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        completion_mask[row, : len(mask)] = torch.tensor(mask, dtype=torch.long)
    weights = torch.tensor([p.weight for p in pairs], dtype=torch.float32)
    return Batch(input_ids, attention, completion_mask, weights, [p.index for p in pairs])


def epoch_order(num_pairs: int, *, seed: int, epoch: int) -> list[int]:
    """The same permutation for a given seed and epoch on every rank and every restart."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_pairs, generator=generator).tolist()


def in_chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
