"""The dataset quality report (DESIGN.md section 5), built one validated row at a time.

Memory does not grow with the file except for duplicate detection: a 64-bit hash per distinct
row and one per distinct normalised prompt, in flat tables kept at most half full (16 to 32 bytes
per entry, so at most 64 bytes per row: 64 MB for a million rows). Everything else is counters,
the first few example line numbers and a fixed-size sample for percentiles.
"""

import json
import random
import re
from array import array
from collections.abc import Iterable

from pydantic import BaseModel, Field

from alignd.contract import PreferenceExample
from alignd.contract.preference import Text

_BATCH = 4096
"""Rows of lengths kept in arrays before they are folded into the running moments."""
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
    `content` lengths."""

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
    (see `truncation_share`)."""


class QualityReport(BaseModel):
    """What a file's rows look like, for deciding whether to train on it. Returned by
    `GET /v1/files/{id}/report`.

    Exact duplicates are rows whose prompt, chosen and rejected equal an earlier row's (ids,
    weights and metadata aside). Near duplicates are rows that are not exact duplicates but whose
    normalised prompt (case-folded, punctuation removed, whitespace collapsed; for message lists
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
    truncation: TruncationReport | None = None
    """Null here: validation knows no tokenizer. Filled in later with the job's tokenizer and
    `max_length`, from `truncation_share`."""


def truncation_share(token_lengths: Iterable[tuple[int, int, int]], max_length: int) -> float:
    """Share of pairs the trainer truncates: prompt + chosen or prompt + rejected is longer than
    `max_length` tokens. Takes `(prompt, chosen, rejected)` token counts; 0.0 for no pairs."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    pairs = truncated = 0
    for prompt, chosen, rejected in token_lengths:
        pairs += 1
        if prompt + max(chosen, rejected) > max_length:
            truncated += 1
    return truncated / pairs if pairs else 0.0


class QualityReportBuilder:
    """Feed every valid row with `add`, in file order, then `build` the report."""

    def __init__(self, *, agreement_threshold: float = 0.5) -> None:
        self.agreement_threshold = agreement_threshold
        self.rows = 0
        self._exact = _HashSet()
        self._prompts = _HashSet()
        self._exact_duplicates = _Finding()
        self._near_duplicates = _Finding()
        self._chosen_equals_rejected = _Finding()
        self._empty_responses = _Finding()
        self._empty_prompts = _Finding()
        self._below_threshold = _Finding()
        self._lengths = [_Moments() for _ in range(4)]
        self._pending = [array("q") for _ in range(4)]
        """Lengths not yet folded into `_lengths`: appending is cheaper per row than updating moments."""
        self._sample = [array("q") for _ in range(4)]
        self._rng = random.Random(SAMPLE_SEED)
        self._chosen_longer = self._rejected_longer = 0
        self._agreement = _Moments()
        self._weight_total = 0.0
        self._weights = _Moments()
        """Moments of the weights other than 1.0; `_weight_total` sums all of them, in file order."""
        self._weighted = 0

    def add(self, example: PreferenceExample, line_bytes: int) -> None:
        """Count one valid row; `line_bytes` is the raw line's size without its line ending.

        Runs once per row of every upload, so it is written for speed: strings (the standard format)
        take an inline path, and lengths are appended to arrays and folded into their moments in
        batches.
        """
        self.rows += 1
        line = example.line
        prompt, chosen, rejected = example.prompt, example.chosen, example.rejected
        if type(prompt) is str and type(chosen) is str and type(rejected) is str:
            prompt_text = prompt
            is_repeat = self._exact.add(hash((prompt, chosen, rejected)) & _UNSIGNED_64 or 1)
            blank_response = not chosen.strip() or not rejected.strip()
            prompt_size, chosen_size, rejected_size = len(prompt), len(chosen), len(rejected)
        else:
            prompt_text = _flat(prompt)
            is_repeat = self._exact.add(_hash_row(prompt, chosen, rejected))
            blank_response = _has_blank(chosen) or _has_blank(rejected)
            prompt_size, chosen_size, rejected_size = _length(prompt), _length(chosen), _length(rejected)

        is_known_prompt = self._prompts.add(_hash_text(_normalise(prompt_text)))
        if is_repeat:
            self._exact_duplicates.add(line)
        elif is_known_prompt:
            self._near_duplicates.add(line)
        if chosen == rejected:
            self._chosen_equals_rejected.add(line)
        if blank_response:
            self._empty_responses.add(line)
        if not prompt_text.strip():
            self._empty_prompts.add(line)

        pending = self._pending
        pending[0].append(prompt_size)
        pending[1].append(chosen_size)
        pending[2].append(rejected_size)
        pending[3].append(line_bytes)
        if len(pending[0]) >= _BATCH:
            self._fold_lengths()
        self._sample_sizes((prompt_size, chosen_size, rejected_size, line_bytes))
        if chosen_size > rejected_size:
            self._chosen_longer += 1
        elif chosen_size < rejected_size:
            self._rejected_longer += 1

        if example.agreement is not None:
            self._agreement.add(example.agreement)
            if example.agreement < self.agreement_threshold:
                self._below_threshold.add(line)
        weight = example.weight
        self._weight_total += weight
        if weight != 1.0:
            self._weighted += 1
            self._weights.add(weight)

    def _fold_lengths(self) -> None:
        for moments, pending in zip(self._lengths, self._pending, strict=True):
            moments.add_many(pending)
            del pending[:]

    def build(self) -> QualityReport:
        self._fold_lengths()
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
            weights=(
                WeightStats(
                    rows_weighted=self._weighted,
                    min=self._weights.min if self._weighted == self.rows else min(self._weights.min, 1.0),
                    mean=self._weight_total / self.rows,
                    max=self._weights.max if self._weighted == self.rows else max(self._weights.max, 1.0),
                )
                if self._weighted
                else None
            ),
        )

    def _sample_sizes(self, sizes: tuple[int, int, int, int]) -> None:
        """Reservoir sampling (Vitter's algorithm R): every row is in the sample with equal chance."""
        if self.rows <= SAMPLE_SIZE:
            for column, size in zip(self._sample, sizes, strict=True):
                column.append(size)
            return
        slot = int(self._rng.random() * self.rows)
        if slot < SAMPLE_SIZE:
            for column, size in zip(self._sample, sizes, strict=True):
                column[slot] = size

    def _length_report(self) -> Lengths | None:
        if not self.rows:
            return None
        prompt, chosen, rejected, line_bytes = (
            LengthStats(
                min=int(moments.min),
                mean=moments.mean,
                p50=_percentile(sorted_sample, 0.50),
                p95=_percentile(sorted_sample, 0.95),
                max=int(moments.max),
            )
            for moments, sorted_sample in zip(self._lengths, map(sorted, self._sample), strict=True)
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
        self.count += 1
        if len(self.lines) < EXAMPLE_LINES:
            self.lines.append(line)

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

    def add_many(self, values: "array[int]") -> None:
        """Add whole integers at once (lengths): their sum is exact, so the total is what adding them one
        by one gives."""
        if values:
            self.count += len(values)
            self.total += sum(values)
            self.min = min(self.min, min(values))
            self.max = max(self.max, max(values))

    @property
    def mean(self) -> float:
        return self.total / self.count


class _HashSet:
    """A set of nonzero 64-bit hashes in one flat array (open addressing, linear probing), kept at
    most half full: 16 to 32 bytes per member, where a Python set of ints takes about 70."""

    def __init__(self) -> None:
        self._slots = array("Q", [0]) * 1024
        self._count = 0

    def add(self, value: int) -> bool:
        """Add `value`; True when it was already there."""
        slots = self._slots
        mask = len(slots) - 1
        index = value & mask
        while found := slots[index]:
            if found == value:
                return True
            index = (index + 1) & mask
        slots[index] = value
        self._count += 1
        if self._count * 2 > len(slots):
            self._grow()
        return False

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", [0]) * (2 * len(old))
        self._count = 0
        for value in old:
            if value:
                self.add(value)


def _hash_text(text: str) -> int:
    return hash(text) & _UNSIGNED_64 or 1


def _hash_row(prompt: Text, chosen: Text, rejected: Text) -> int:
    """Equal texts hash equal: strings as they are, message lists as canonical JSON (keys sorted)."""
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        return hash((prompt, chosen, rejected)) & _UNSIGNED_64 or 1
    return _hash_text(_CANONICAL_JSON.encode([prompt, chosen, rejected]))


_UNSIGNED_64 = (1 << 64) - 1
_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _flat(text: Text) -> str:
    """A message list's contents as one text."""
    return text if isinstance(text, str) else "\n".join(message["content"] for message in text)


def _length(text: Text) -> int:
    return len(text) if isinstance(text, str) else sum(len(message["content"]) for message in text)


def _has_blank(text: Text) -> bool:
    if isinstance(text, str):
        return not text.strip()
    return any(not message["content"].strip() for message in text)


_NOT_WORD = re.compile(r"[^\w\s]|_")
"""Punctuation, symbols and control characters: what `_normalise` removes."""
_ASCII_FOLD = str.maketrans(
    dict.fromkeys((c for c in map(chr, range(128)) if _NOT_WORD.match(c)), None)
    | dict.fromkeys((c for c in map(chr, range(128)) if c.isspace() and c != " "), " ")
)
"""For ASCII text, as one translate table (three times faster than the regex): removes what `_NOT_WORD`
matches, and makes every whitespace character a space, which collapsing whitespace does anyway."""


def _normalise(text: str) -> str:
    """Case-folded, punctuation removed, whitespace collapsed: "Hello,  World!" -> "hello world"."""
    text = text.casefold()
    if not text.isascii():
        return " ".join(_NOT_WORD.sub("", text).split())
    text = text.translate(_ASCII_FOLD)
    # With every whitespace a space, text without a double space only needs its ends trimmed, and
    # that skips splitting it into words (the usual prompt) just to join them again.
    return " ".join(text.split()) if "  " in text else text.strip(" ")


def _percentile(sorted_values: list[int], share: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = share * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)
