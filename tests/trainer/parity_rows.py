"""The rows and shapes that the TRL parity tests and the packing tests share: every preference format,
with rows that merge tokens across the prompt/completion boundary, carry their own EOS, are truncated,
or are dropped for a prompt that fills `MAX_LENGTH`."""

from typing import Any

from alignd.contract import TruncationMode
from alignd_trainer.synthetic import preference_rows

MAX_LENGTH = 24
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FORMATS = ["standard", "conversational", "conversational_implicit", "openai"]
MODES = [TruncationMode.keep_start, TruncationMode.keep_end]


Row = dict[str, Any]


def _assistant(text: str) -> list[Row]:
    return [{"role": "assistant", "content": text}]


STANDARD_EXTRA: list[Row] = [
    # Token merge across the prompt/completion boundary: " fru" + "it." tokenizes as " fruit" ".".
    {"prompt": "Name a fru", "chosen": "it.", "rejected": "x."},
    # EOS already present on one completion.
    {"prompt": "Give me one tool.", "chosen": " drill.</s>", "rejected": " cat."},
    # The completion alone is longer than MAX_LENGTH: truncated by the collator in both modes, and under
    # keep_end the sequence starts inside the completion.
    {"prompt": "Say a fruit:", "chosen": " mango." + " I like the mango." * 6, "rejected": " otter."},
    # The prompt alone fills MAX_LENGTH: dropped under keep_start.
    {"prompt": "Name a fruit. " * 8 + "Say a fruit:", "chosen": " plum.", "rejected": " saw."},
]
CONVERSATIONAL_EXTRA: list[Row] = [
    # Truncated by the collator in both modes.
    {
        "prompt": [{"role": "user", "content": "Say a color:"}],
        "chosen": _assistant("red." + " I like the red." * 6),
        "rejected": _assistant("dog."),
    },
    {
        "prompt": [{"role": "system", "content": "One word."}, {"role": "user", "content": "Say a color:"}],
        "chosen": _assistant("blue."),
        "rejected": _assistant("saw."),
    },
    # The prompt alone fills MAX_LENGTH: dropped under keep_start.
    {
        "prompt": [
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "apple."},
            {"role": "user", "content": "Name a fruit. Name a fruit. Give me one fruit."},
        ],
        "chosen": _assistant("plum."),
        "rejected": _assistant("saw."),
    },
]


def rows_for(fmt: str) -> tuple[list[Row], list[Row]]:
    """(rows we read from JSONL, rows TRL gets as a `datasets.Dataset`) for one format."""
    if fmt == "standard":
        rows = preference_rows(6, seed=5, fmt="standard") + STANDARD_EXTRA
        return rows, rows
    conversational = preference_rows(6, seed=5, fmt="conversational") + CONVERSATIONAL_EXTRA
    if fmt == "conversational":
        return conversational, conversational
    if fmt == "conversational_implicit":
        implicit = [
            {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
            for r in conversational
        ]
        return implicit, implicit  # TRL extracts the shared prompt itself
    if fmt == "openai":
        openai = [
            {
                "input": {"messages": r["prompt"]},
                "preferred_output": r["chosen"],
                "non_preferred_output": r["rejected"],
            }
            for r in conversational
        ]
        return openai, conversational
    raise ValueError(fmt)
