"""Overlap between a training file and its validation file: validation pairs that also train.

It uses the quality report's duplicate keys (`report.duplicate_keys`): a validation row "shares its
prompt" with training when its normalised prompt equals a training row's (what a near duplicate is
within one file), and "repeats a pair" when prompt, chosen and rejected equal a training row's (what an
exact duplicate is). Either makes validation loss and reward accuracy look better than they are.
Memory: 16 bytes per row of each file.
"""

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from alignd.datasets.hashset import Hashes
from alignd.datasets.report import EXAMPLE_LINES, LineSample, duplicate_keys
from alignd.datasets.rows import Rows


class Overlap(BaseModel):
    """Validation pairs found in the training file too."""

    validation_rows: int
    same_prompt: LineSample
    """Validation rows whose normalised prompt is some training row's prompt; `example_lines` are
    validation line numbers."""
    same_pair: LineSample
    """Validation rows whose prompt, chosen and rejected equal some training row's (a subset of
    `same_prompt`)."""
    same_prompt_share: float
    """`same_prompt.count / validation_rows`."""
    same_pair_share: float

    @property
    def found(self) -> bool:
        return self.same_prompt.count > 0


class RowKeys:
    """The duplicate keys and line numbers of a file's rows, fed a batch of `Rows` at a time."""

    def __init__(self) -> None:
        self._pairs: list[Hashes] = []
        self._prompts: list[Hashes] = []
        self._lines: list[npt.NDArray[np.int64]] = []

    def add(self, rows: Rows) -> None:
        if not len(rows):
            return
        pairs, prompts = duplicate_keys(rows)
        self._pairs.append(pairs)
        self._prompts.append(prompts)
        self._lines.append(np.asarray(rows.lines, dtype=np.int64))

    def add_keys(self, pairs: Hashes, prompts: Hashes, lines: Iterable[int]) -> None:
        """Keys computed elsewhere (chat rows: `chat_report.duplicate_keys`, the conversation standing for
        the pair), one per row."""
        self._pairs.append(pairs)
        self._prompts.append(prompts)
        self._lines.append(np.asarray(list(lines), dtype=np.int64))

    def columns(self) -> tuple[Hashes, Hashes, npt.NDArray[np.int64]]:
        """(pair keys, prompt keys, line numbers), one entry per row in file order."""
        return (
            _concatenate(self._pairs, np.uint64),
            _concatenate(self._prompts, np.uint64),
            _concatenate(self._lines, np.int64),
        )


def find_overlap(training: RowKeys, validation: RowKeys) -> Overlap:
    train_pairs, train_prompts, _ = training.columns()
    pairs, prompts, lines = validation.columns()
    same_prompt = np.isin(prompts, train_prompts)
    same_pair = np.isin(pairs, train_pairs)
    rows = len(lines)
    return Overlap(
        validation_rows=rows,
        same_prompt=_sample(lines[same_prompt]),
        same_pair=_sample(lines[same_pair]),
        same_prompt_share=float(same_prompt.sum()) / rows if rows else 0.0,
        same_pair_share=float(same_pair.sum()) / rows if rows else 0.0,
    )


def _sample(lines: npt.NDArray[np.int64]) -> LineSample:
    return LineSample(count=len(lines), example_lines=[int(line) for line in lines[:EXAMPLE_LINES]])


def _concatenate(parts: Iterable[npt.NDArray], dtype: type) -> npt.NDArray:
    chunks = list(parts)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
