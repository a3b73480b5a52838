"""Overlap between a training and a validation file, by the quality report's duplicate keys."""

import json

from alignd.contract import parse_preference_line
from alignd.datasets.lines import LineBatch
from alignd.datasets.overlap import RowKeys, find_overlap
from alignd.datasets.rows import Rows
from alignd.datasets.typed_rows import decode_rows


def keys(rows: list[dict[str, object]], *, row_by_row: bool = False) -> RowKeys:
    lines = [json.dumps(row).encode() for row in rows]
    batch = LineBatch(1, lines)
    out = RowKeys()
    if row_by_row:
        examples = [parse_preference_line(line, number) for number, line in enumerate(lines, 1)]
        out.add(Rows.from_examples(examples, [len(line) for line in lines]))
    else:
        decoded = decode_rows(batch, None)
        assert decoded is not None
        out.add(decoded[1])
    return out


def chat(prompt: str, chosen: str, rejected: str) -> dict[str, object]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def test_the_same_prompt_is_found_after_normalisation_and_the_same_pair_exactly() -> None:
    training = [
        {"prompt": "Hello, World!", "chosen": "Hi.", "rejected": "Go away."},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ]
    validation = [
        {"prompt": "Something new", "chosen": "a", "rejected": "b"},
        {"prompt": "hello world", "chosen": "Hey.", "rejected": "No."},  # same normalised prompt
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},  # the same pair
    ]

    overlap = find_overlap(keys(training), keys(validation))

    assert overlap.validation_rows == 3
    assert (overlap.same_prompt.count, overlap.same_prompt.example_lines) == (2, [2, 3])
    assert (overlap.same_pair.count, overlap.same_pair.example_lines) == (1, [3])
    assert overlap.same_prompt_share == 2 / 3 and overlap.same_pair_share == 1 / 3
    assert overlap.found


def test_message_lists_compare_alike_whichever_decoder_read_them() -> None:
    training = [chat("Name a fruit.", "Apple.", "Dog."), chat("Name a colour.", "Red.", "Seven.")]
    validation = [chat("Name a fruit.", "Apple.", "Dog."), chat("Name a planet.", "Mars.", "Cheese.")]

    typed = find_overlap(keys(training), keys(validation, row_by_row=True))
    parsed = find_overlap(keys(training, row_by_row=True), keys(validation))

    assert typed == parsed
    assert (typed.same_prompt.count, typed.same_pair.count) == (1, 1)


def test_no_overlap() -> None:
    overlap = find_overlap(
        keys([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
        keys([{"prompt": "d", "chosen": "e", "rejected": "f"}]),
    )
    assert not overlap.found and overlap.same_prompt_share == 0.0
