"""A batch of valid rows as columns: what the quality report reads.

Both validation paths produce it: typed batch decoding of standard rows (`standard_rows`) and the
row-by-row parser shared with the trainer (`Rows.from_examples`).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from alignd.contract import PreferenceExample
from alignd.contract.preference import Text


@dataclass(frozen=True)
class Rows:
    lines: Sequence[int]
    """1-based line numbers, ascending."""
    prompts: Sequence[Text]
    chosen: Sequence[Text]
    rejected: Sequence[Text]
    line_bytes: Sequence[int]
    """Raw line sizes without the line ending."""
    strings: bool
    """True when every text is a string (the standard format), False when all are message lists."""
    weights: list[float] | None = None
    """None when every row weighs 1.0."""
    agreement: list[float | None] | None = None
    """None when no row carries agreement."""

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def from_examples(cls, examples: list[PreferenceExample], line_bytes: list[int]) -> "Rows":
        weights = [example.weight for example in examples]
        agreement = [example.agreement for example in examples]
        return cls(
            lines=[example.line for example in examples],
            prompts=[example.prompt for example in examples],
            chosen=[example.chosen for example in examples],
            rejected=[example.rejected for example in examples],
            line_bytes=line_bytes,
            strings=all(type(example.prompt) is str for example in examples),
            weights=weights if any(weight != 1.0 for weight in weights) else None,
            agreement=agreement if any(value is not None for value in agreement) else None,
        )
