"""The dataset quality report (DESIGN.md section 5), built from batches of validated rows.

Memory does not grow with the file except for duplicate detection: a 64-bit hash per distinct
row and one per distinct normalised prompt, in flat tables (`HashSet`: 16 to 64 bytes per entry, so
at most 128 bytes per row, 128 MB for a million rows), plus the hashes of up to `DUPLICATE_BATCH`
rows waiting to be probed. Everything else is counters, the first few example line numbers and a
fixed-size sample for percentiles.
"""

import operator
from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from alignd.contract import TruncationMode
from alignd.datasets.hashset import Hashes, HashSet
from alignd.datasets.normalise import normalise_many
from alignd.datasets.rows import Rows, Turns

DUPLICATE_BATCH = 32_768
"""Rows whose hashes wait before one vectorised probe of the duplicate tables."""
EXAMPLE_LINES = 5
"""Line numbers kept per finding, the first ones in the file."""
SAMPLE_SIZE = 10_000
"""Rows in the length sample: percentiles are exact up to this many rows, estimated beyond."""
SAMPLE_SEED = 0


class LineSample(BaseModel):
    """How many rows have a property, and where to look."""

    count: int = 0
    """Rows with the property."""
    example_lines: list[int] = Field(default_factory=list)
    """The first few of those rows' 1-based line numbers (at most 5)."""


class LengthStats(BaseModel):
    """Distribution of one length over all rows.

    `min`, `mean` and `max` are exact. `p50` and `p95` are linearly interpolated percentiles of a
    uniform sample of 10,000 rows (reservoir sampling with a fixed seed, so the same file always
    gives the same report): exact for files of up to 10,000 rows, estimates beyond.
    """

    min: int
    mean: float
    p50: float
    p95: float
    max: int


class Lengths(BaseModel):
    """Lengths in characters (Unicode code points). For message lists, the sum of the messages'
    `content` lengths, a tool call counting as its function's name plus its arguments string."""

    prompt: LengthStats
    chosen: LengthStats
    rejected: LengthStats
    line_bytes: LengthStats
    """Size of the raw JSONL line, in bytes."""


class LengthBias(BaseModel):
    """Whether the preferred response tends to be the longer one: DPO learns that shortcut easily."""

    chosen_longer_share: float
    """Share of pairs whose chosen response has more characters than the rejected one; about 0.5
    means no length bias, close to 1 means "longer is better" is most of the signal."""
    chosen_longer: int
    rejected_longer: int
    same_length: int


class AgreementStats(BaseModel):
    """Annotator agreement from the optional `agreement` (share) or `votes` ([for, against]) fields."""

    threshold: float
    """Rows with agreement strictly below this count in `below_threshold`."""
    rows_with_agreement: int
    """Rows that carry agreement at all; rows without it are never counted as below."""
    below_threshold: LineSample
    mean: float | None
    """Mean agreement over the rows that carry it; null when none does."""


class WeightStats(BaseModel):
    """Per-row `weight` values; rows without one count as 1.0."""

    rows_weighted: int
    """Rows whose weight is not 1.0."""
    min: float
    mean: float
    max: float


class TruncationReport(BaseModel):
    """How much of the data the job's `max_length` cuts, counted with the job's tokenizer."""

    model: str
    """The base model whose tokenizer counted the tokens."""
    max_length: int
    truncated_share: float
    """Share of pairs where prompt + chosen or prompt + rejected is longer than `max_length` tokens
    (see `truncation_share`), counting pairs whose prompt alone fills it (the trainer drops those)."""
    truncation_mode: TruncationMode | None = None
    truncated_pairs: int | None = None
    sampled: bool = False
    """Counted on an even sample of the rows (ALIGND_ESTIMATE_MAX_ROWS); `truncated_pairs` extrapolated."""


class QualityReport(BaseModel):
    """What a file's rows look like, for deciding whether to train on it. Returned by
    `GET /v1/files/{id}/report`.

    Exact duplicates are rows whose prompt, chosen and rejected equal an earlier row's (ids,
    weights and metadata aside). Near duplicates are rows that are not exact duplicates but whose
    normalised prompt (case-folded, punctuation and whitespace removed; for message lists
    the contents joined) equals an earlier row's: the same question asked again with a different
    pair. Both compare 64-bit hashes (Python's SipHash of the texts), so a false match is possible
    but negligible: odds of a few in a million for a file of ten million rows.
    """

    rows: int
    """Valid rows (blank lines are not rows)."""
    exact_duplicates: LineSample
    """Rows repeating an earlier row exactly; `example_lines` are the repeats, not the originals."""
    near_duplicates: LineSample
    """Rows that are not exact duplicates but whose normalised prompt repeats an earlier row's."""
    chosen_equals_rejected: LineSample
    """Rows whose chosen and rejected responses are identical: no preference signal."""
    empty_responses: LineSample
    """Rows where the chosen or the rejected response has an empty or whitespace-only message.
    Wholly empty responses fail validation, so these are message lists with some empty turns."""
    empty_prompts: LineSample
    """Rows whose prompt is empty or whitespace only (allowed in the standard format)."""
    lengths: Lengths | None
    """Null for a file with no rows."""
    length_bias: LengthBias | None
    """Null for a file with no rows."""
    agreement: AgreementStats
    weights: WeightStats | None
    """Null when no row sets a weight other than 1.0."""
    tools: LineSample = Field(default_factory=LineSample)
    """Rows that use function calling: they offer tools (OpenAI's `input.tools`) or a turn calls one
    (`tool_calls`). Training on them needs a base model whose chat template renders tools. Two rows
    that differ only in their tools are not exact duplicates."""
    truncation: TruncationReport | None = None
    """Null at upload: validation knows no tokenizer. Filled in when a job or an estimate
    (`POST /v1/fine_tuning/jobs/estimate`) names a model, with its tokenizer and the job's `max_length`;
    the latest count is kept, and names its model and `max_length`."""


def truncation_share(token_lengths: Iterable[tuple[int, int, int]], max_length: int) -> float:
    """Share of pairs the trainer truncates: prompt + chosen or prompt + rejected is longer than
    `max_length` tokens. Takes `(prompt, chosen, rejected)` token counts; 0.0 for no pairs."""
    truncated, pairs = count_truncated(token_lengths, max_length)
    return truncated / pairs if pairs else 0.0


def count_truncated(token_lengths: Iterable[tuple[int, int, int]], max_length: int) -> tuple[int, int]:
    """`(truncated pairs, pairs)` for `truncation_share`: the counts behind the share."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    pairs = truncated = 0
    for prompt, chosen, rejected in token_lengths:
        pairs += 1
        if prompt + max(chosen, rejected) > max_length:
            truncated += 1
    return truncated, pairs


def prompt_texts(rows: Rows) -> Sequence[str]:
    """A batch's prompts as text: strings as they are, a message list's contents joined by newlines."""
    if rows.strings:
        return cast(Sequence[str], rows.prompts)
    return [
        "\n".join([message.content for message in turns]) for turns in cast(Sequence[Turns], rows.prompts)
    ]


def duplicate_keys(rows: Rows, prompts: Sequence[str] | None = None) -> tuple[Hashes, Hashes]:
    """Per row, the two keys duplicates are found by: the hash of the whole pair, tools included (exact
    duplicates), and the hash of the normalised prompt (near duplicates). `prompts` is
    `prompt_texts(rows)` if the caller has it already. Python's string hashes are salted per process:
    compare keys within one process."""
    prompts = prompt_texts(rows) if prompts is None else prompts
    row_hashes = map(hash, zip(rows.prompts, rows.chosen, rows.rejected, strict=True))
    if rows.tools is not None:
        row_hashes = map(_with_tools, zip(row_hashes, rows.tools, strict=True))
    prompt_hashes = map(hash, normalise_many(prompts))
    return _hashes(row_hashes, len(rows)), _hashes(prompt_hashes, len(rows))


class QualityReportBuilder:
    """Feed every valid row with `add`, a batch at a time in file order, then `build` the report.

    Runs over every row of every upload, so it works on columns: lengths and flags are numpy arrays,
    prompts are normalised a batch at a time, and duplicate hashes wait in batches of
    `DUPLICATE_BATCH` rows for one vectorised probe of each table.
    """

    def __init__(self, *, agreement_threshold: float = 0.5) -> None:
        self.agreement_threshold = agreement_threshold
        self.rows = 0
        self._exact = HashSet()
        self._prompts = HashSet()
        self._pending: list[tuple[Hashes, Hashes, npt.NDArray[np.int64]]] = []
        """(row hashes, normalised-prompt hashes, line numbers) not yet probed."""
        self._pending_rows = 0
        self._exact_duplicates = _Finding()
        self._near_duplicates = _Finding()
        self._chosen_equals_rejected = _Finding()
        self._empty_responses = _Finding()
        self._empty_prompts = _Finding()
        self._below_threshold = _Finding()
        self._tools = _Finding()
        self._length_min = np.full(4, np.iinfo(np.int64).max)
        self._length_max = np.zeros(4, dtype=np.int64)
        self._length_total = [0, 0, 0, 0]
        self._sample = np.zeros((4, SAMPLE_SIZE), dtype=np.int64)
        self._rng = np.random.Generator(np.random.PCG64(SAMPLE_SEED))
        self._chosen_longer = self._rejected_longer = 0
        self._agreement = _Moments()
        self._weight_total = 0.0
        self._weights = _Moments()
        """Moments of the weights other than 1.0; `_weight_total` sums all of them, in file order."""

    def add(self, rows: Rows) -> None:
        """Count a batch of valid rows that follows the ones added before."""
        count = len(rows)
        if not count:
            return
        first_row = self.rows + 1
        self.rows += count
        lines = np.asarray(rows.lines, dtype=np.int64)
        prompts = prompt_texts(rows)
        if rows.strings:
            size_columns = [
                np.fromiter(map(len, column), dtype=np.int64, count=count)
                for column in (rows.prompts, rows.chosen, rows.rejected)
            ]
        else:
            # Strings with nothing but whitespace fail validation, so only message lists can hold one.
            columns = [cast(Sequence[Turns], column) for column in (rows.prompts, rows.chosen, rows.rejected)]
            if rows.tool_lines is not None:
                self._tools.add_many(rows.tool_lines)
            stats = [_turn_stats(column) for column in columns]
            size_columns = [lengths for lengths, _ in stats]
            self._empty_responses.add_many(lines[stats[1][1] | stats[2][1]])
        self._pending.append((*duplicate_keys(rows, prompts), lines))
        self._pending_rows += count
        if self._pending_rows >= DUPLICATE_BATCH:
            self._probe_duplicates()

        same = np.fromiter(map(operator.eq, rows.chosen, rows.rejected), dtype=bool, count=count)
        self._chosen_equals_rejected.add_many(lines[same])
        empty_prompt = np.fromiter(map(operator.not_, map(str.strip, prompts)), dtype=bool, count=count)
        self._empty_prompts.add_many(lines[empty_prompt])

        sizes = np.array([*size_columns, rows.line_bytes], dtype=np.int64)
        self._add_sizes(sizes, first_row)
        self._chosen_longer += int(np.count_nonzero(sizes[1] > sizes[2]))
        self._rejected_longer += int(np.count_nonzero(sizes[1] < sizes[2]))
        self._add_agreement(rows.agreement, lines)
        self._add_weights(rows.weights, count)

    def _probe_duplicates(self) -> None:
        if not self._pending:
            return
        pending = zip(*self._pending, strict=True)
        row_hashes, prompt_hashes, lines = (np.concatenate(column) for column in pending)
        self._pending, self._pending_rows = [], 0
        repeat = self._exact.add_many(row_hashes)
        known_prompt = self._prompts.add_many(prompt_hashes)
        self._exact_duplicates.add_many(lines[repeat])
        self._near_duplicates.add_many(lines[known_prompt & ~repeat])

    def _add_sizes(self, sizes: npt.NDArray[np.int64], first_row: int) -> None:
        """Exact min, max and total, and the reservoir sample (Vitter's algorithm R, vectorised: row k
        replaces a random slot with chance SAMPLE_SIZE / k, a later row winning a slot drawn twice)."""
        self._length_min = np.minimum(self._length_min, sizes.min(axis=1))
        self._length_max = np.maximum(self._length_max, sizes.max(axis=1))
        for column, total in enumerate(sizes.sum(axis=1).tolist()):
            self._length_total[column] += total
        filled = max(0, min(sizes.shape[1], SAMPLE_SIZE - first_row + 1))
        self._sample[:, first_row - 1 : first_row - 1 + filled] = sizes[:, :filled]
        row_numbers = np.arange(first_row + filled, first_row + sizes.shape[1])
        if not len(row_numbers):
            return
        slots = (self._rng.random(len(row_numbers)) * row_numbers).astype(np.int64)
        drawn = np.flatnonzero(slots < SAMPLE_SIZE)[::-1]
        _, last = np.unique(slots[drawn], return_index=True)
        winners = drawn[last]
        self._sample[:, slots[winners]] = sizes[:, filled + winners]

    def _add_agreement(self, agreement: list[float | None] | None, lines: npt.NDArray[np.int64]) -> None:
        if agreement is None:
            return
        for line, value in zip(lines.tolist(), agreement, strict=True):
            if value is not None:
                self._agreement.add(value)
                if value < self.agreement_threshold:
                    self._below_threshold.add(line)

    def _add_weights(self, weights: list[float] | None, count: int) -> None:
        if weights is None:
            self._weight_total += count
            return
        for weight in weights:
            self._weight_total += weight
            if weight != 1.0:
                self._weights.add(weight)

    def build(self) -> QualityReport:
        self._probe_duplicates()
        return QualityReport(
            rows=self.rows,
            exact_duplicates=self._exact_duplicates.model(),
            near_duplicates=self._near_duplicates.model(),
            chosen_equals_rejected=self._chosen_equals_rejected.model(),
            empty_responses=self._empty_responses.model(),
            empty_prompts=self._empty_prompts.model(),
            lengths=self._length_report(),
            length_bias=self._length_bias(),
            agreement=AgreementStats(
                threshold=self.agreement_threshold,
                rows_with_agreement=self._agreement.count,
                below_threshold=self._below_threshold.model(),
                mean=self._agreement.mean if self._agreement.count else None,
            ),
            weights=self._weight_stats(),
            tools=self._tools.model(),
        )

    def _weight_stats(self) -> WeightStats | None:
        weighted = self._weights.count
        if not weighted:
            return None
        return WeightStats(
            rows_weighted=weighted,
            min=self._weights.min if weighted == self.rows else min(self._weights.min, 1.0),
            mean=self._weight_total / self.rows,
            max=self._weights.max if weighted == self.rows else max(self._weights.max, 1.0),
        )

    def _length_report(self) -> Lengths | None:
        if not self.rows:
            return None
        sample = np.sort(self._sample[:, : min(self.rows, SAMPLE_SIZE)], axis=1).tolist()
        prompt, chosen, rejected, line_bytes = (
            LengthStats(
                min=int(self._length_min[column]),
                mean=self._length_total[column] / self.rows,
                p50=_percentile(sample[column], 0.50),
                p95=_percentile(sample[column], 0.95),
                max=int(self._length_max[column]),
            )
            for column in range(4)
        )
        return Lengths(prompt=prompt, chosen=chosen, rejected=rejected, line_bytes=line_bytes)

    def _length_bias(self) -> LengthBias | None:
        if not self.rows:
            return None
        return LengthBias(
            chosen_longer_share=self._chosen_longer / self.rows,
            chosen_longer=self._chosen_longer,
            rejected_longer=self._rejected_longer,
            same_length=self.rows - self._chosen_longer - self._rejected_longer,
        )


class _Finding:
    def __init__(self) -> None:
        self.count = 0
        self.lines: list[int] = []

    def add(self, line: int) -> None:
        self.add_many([line])

    def add_many(self, lines: "npt.NDArray[np.int64] | list[int]") -> None:
        self.count += len(lines)
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.extend(int(line) for line in lines[: EXAMPLE_LINES - len(self.lines)])

    def model(self) -> LineSample:
        return LineSample(count=self.count, example_lines=list(self.lines))


class _Moments:
    """Exact count, min, max and mean of a stream of numbers."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    @property
    def mean(self) -> float:
        return self.total / self.count


def _with_tools(row: tuple[int, str | None]) -> int:
    """A row's hash, told apart from the same messages offered with other tools (or none)."""
    row_hash, tools = row
    return row_hash if tools is None else hash((row_hash, tools))


def _hashes(values: Iterable[int], count: int) -> Hashes:
    """Python hashes as the tables' nonzero unsigned 64-bit keys."""
    hashes = np.fromiter(values, dtype=np.int64, count=count).view(np.uint64)
    hashes[hashes == 0] = 1
    return hashes


def _turn_stats(column: Sequence[Turns]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per row of a message-list column: the length of its contents, and whether a message is blank.
    Worked out per message, then summed per row from running totals (no Python call per row)."""
    contents = [message.content for turns in column for message in turns]
    ends = np.cumsum(np.fromiter(map(len, column), dtype=np.int64, count=len(column)))
    starts = np.concatenate(([0], ends[:-1]))
    lengths = np.fromiter(map(len, contents), dtype=np.int64, count=len(contents))
    blank = np.fromiter(map(operator.not_, map(str.strip, contents)), dtype=np.int64, count=len(contents))
    length_totals = np.concatenate(([0], np.cumsum(lengths)))
    blank_totals = np.concatenate(([0], np.cumsum(blank)))
    return length_totals[ends] - length_totals[starts], blank_totals[ends] > blank_totals[starts]


def _percentile(sorted_values: list[int], share: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = share * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
