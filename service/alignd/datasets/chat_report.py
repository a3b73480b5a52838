"""The quality report of a chat (SFT) file: what its conversations look like before training on them.

Built a row at a time from `ChatExample`s. Memory does not grow with the file except for duplicate
detection (one 64-bit hash per distinct conversation and per distinct normalised prompt, in `HashSet`
tables); the rest is counters, a few example line numbers and a fixed-size sample for percentiles.
"""

import json
import random
from typing import Literal

import numpy as np
from pydantic import BaseModel

from alignd.contract.chat import ChatExample, content_length, is_blank
from alignd.datasets.hashset import HashSet
from alignd.datasets.normalise import normalise
from alignd.datasets.report import (
    EXAMPLE_LINES,
    SAMPLE_SEED,
    SAMPLE_SIZE,
    LengthStats,
    LineSample,
    TruncationReport,
)

_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class ChatLengths(BaseModel):
    """Per-row lengths. Characters are Unicode code points of the messages' `content`."""

    turns: LengthStats
    """Messages per conversation."""
    characters: LengthStats
    """All messages' content together."""
    trained_characters: LengthStats
    """The content of the assistant turns trained on (weight 1)."""
    line_bytes: LengthStats
    """Size of the raw JSONL line, in bytes."""


class ChatQualityReport(BaseModel):
    """The report of a chat file for supervised fine-tuning (`GET /v1/files/{id}/report`).

    Exact duplicates repeat an earlier conversation exactly (messages and tools). Near duplicates are not
    exact duplicates but their normalised prompt (the messages before the last trained assistant turn,
    case-folded, punctuation and whitespace removed) equals an earlier row's. Both compare 64-bit hashes.
    Token counts need the job's tokenizer: `truncation` is filled with it when a job's model is known.
    """

    kind: Literal["chat"] = "chat"
    rows: int
    exact_duplicates: LineSample
    near_duplicates: LineSample
    empty_turns: LineSample
    """Rows with a message whose content is empty or whitespace only (and that calls no tool)."""
    no_assistant_turn: LineSample
    """Rows with no assistant turn to train on (none at all, or every one has weight 0): the trainer
    skips them."""
    untrained_turns: int
    """Assistant turns with weight 0, in all rows: context, not trained on."""
    rows_with_tools: int
    lengths: ChatLengths | None
    """Null for a file with no rows."""
    truncation: TruncationReport | None = None
    """Null until a job's model is known (validation knows no tokenizer): then the share of conversations
    the trainer truncates at the job's `max_length`, counted by `alignd.estimates` (`truncated_pairs`
    counts conversations here)."""


class ChatReportBuilder:
    def __init__(self) -> None:
        self.rows = 0
        self._exact = HashSet()
        self._prompts = HashSet()
        self._findings = {name: _Lines() for name in ("exact", "near", "empty", "no_assistant")}
        self._untrained = 0
        self._tools = 0
        self._columns = _Columns(4)

    @property
    def trainable_rows(self) -> int:
        return self.rows - self._findings["no_assistant"].count

    def add(self, example: ChatExample, line_bytes: int) -> None:
        self.rows += 1
        line = example.line
        conversation, prompt = duplicate_keys(example)
        repeat = bool(self._exact.add_many(conversation)[0])
        known_prompt = bool(self._prompts.add_many(prompt)[0])
        if repeat:
            self._findings["exact"].add(line)
        elif known_prompt:
            self._findings["near"].add(line)
        if any(is_blank(m) for m in example.messages):
            self._findings["empty"].add(line)
        if not example.has_trained_turn:
            self._findings["no_assistant"].add(line)
        assistant = [i for i, m in enumerate(example.messages) if m["role"] == "assistant"]
        self._untrained += sum(1 for i in assistant if not example.trained[i])
        self._tools += example.tools is not None
        trained_chars = sum(
            content_length(m) for m, t in zip(example.messages, example.trained, strict=True) if t
        )
        self._columns.add(
            [len(example.messages), sum(map(content_length, example.messages)), trained_chars, line_bytes]
        )

    def build(self) -> ChatQualityReport:
        stats = self._columns.stats()
        return ChatQualityReport(
            rows=self.rows,
            exact_duplicates=self._findings["exact"].model(),
            near_duplicates=self._findings["near"].model(),
            empty_turns=self._findings["empty"].model(),
            no_assistant_turn=self._findings["no_assistant"].model(),
            untrained_turns=self._untrained,
            rows_with_tools=self._tools,
            lengths=ChatLengths(
                turns=stats[0], characters=stats[1], trained_characters=stats[2], line_bytes=stats[3]
            )
            if stats
            else None,
        )


def duplicate_keys(
    example: ChatExample,
) -> tuple["np.typing.NDArray[np.uint64]", "np.typing.NDArray[np.uint64]"]:
    """The row's (conversation, normalised prompt) keys, one 64-bit hash each: what an exact and a near
    duplicate compare, within a file here and between a training and a validation file in the estimate."""
    conversation = _CANONICAL.encode([example.messages, example.tools])
    last = max((i for i, trained in enumerate(example.trained) if trained), default=len(example.messages))
    prompt = "\n".join(str(m.get("content") or "") for m in example.messages[:last])
    return _hash(conversation), _hash(normalise(prompt))


def _hash(text: str) -> "np.typing.NDArray[np.uint64]":
    value = np.array([hash(text)], dtype=np.int64).view(np.uint64)
    value[value == 0] = 1
    return value


class _Lines:
    def __init__(self) -> None:
        self.count = 0
        self.lines: list[int] = []

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.append(line)

    def model(self) -> LineSample:
        return LineSample(count=self.count, example_lines=list(self.lines))


class _Columns:
    """Exact min, max and mean per column, and percentiles from a uniform reservoir sample of rows
    (fixed seed: the same file always gives the same report; exact up to SAMPLE_SIZE rows)."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.minimum = [0] * width
        self.maximum = [0] * width
        self.total = [0] * width
        self.sample: list[list[int]] = []
        self._rng = random.Random(SAMPLE_SEED)

    def add(self, values: list[int]) -> None:
        self.count += 1
        if self.count == 1:
            self.minimum, self.maximum = list(values), list(values)
        else:
            self.minimum = [min(a, b) for a, b in zip(self.minimum, values, strict=True)]
            self.maximum = [max(a, b) for a, b in zip(self.maximum, values, strict=True)]
        self.total = [a + b for a, b in zip(self.total, values, strict=True)]
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(values)
        else:
            slot = self._rng.randrange(self.count)
            if slot < SAMPLE_SIZE:
                self.sample[slot] = values

    def stats(self) -> list[LengthStats]:
        if not self.count:
            return []
        columns = np.array(self.sample, dtype=np.float64).T
        return [
            LengthStats(
                min=self.minimum[i],
                mean=self.total[i] / self.count,
                p50=float(np.percentile(columns[i], 50)),
                p95=float(np.percentile(columns[i], 95)),
                max=self.maximum[i],
            )
            for i in range(len(self.total))
        ]
