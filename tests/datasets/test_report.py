"""The quality report on crafted files, checked against numbers worked out by hand."""

import json
from dataclasses import replace

import pytest

from alignd.contract import DataFormat, PreferenceExample
from alignd.datasets import (
    QualityReport,
    QualityReportBuilder,
    WeightStats,
    truncation_share,
    validate_stream,
)
from alignd.datasets.normalise import normalise as _normalise
from alignd.datasets.report import SAMPLE_SIZE
from alignd.datasets.rows import Rows

STANDARD_LINES: list[dict[str, object] | None] = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "five", "agreement": 0.9},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "five", "id": "copy", "metadata": {"src": "b"}},
    None,  # a blank line: line 3, not a row
    {"prompt": "WHAT is   2+2 ??", "chosen": "4", "rejected": "five", "votes": [1, 3]},
    {"prompt": "Name a colour.", "chosen": "Blue", "rejected": "Blue", "weight": 2.0},
    {"prompt": "name a colour", "chosen": "Red, a warm colour.", "rejected": "Green", "agreement": 0.5},
    {"prompt": "", "chosen": "ok", "rejected": "not ok"},
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "five"},
]


def _file(rows: list[dict[str, object] | None]) -> bytes:
    return b"".join((json.dumps(row).encode() if row is not None else b"") + b"\n" for row in rows)


def _report(data: bytes) -> QualityReport:
    return validate_stream([data]).report


def test_report_on_a_crafted_standard_file() -> None:
    """Lines 2 and 8 repeat line 1 (id and metadata aside): exact duplicates. Line 4's prompt
    normalises to line 1's ("what is 22") and line 6's to line 5's ("name a colour"), with other
    pairs: near duplicates. Line 5 has chosen == rejected, line 7 an empty prompt.

    Lengths: prompt [12, 12, 16, 14, 13, 0, 12], chosen [1, 1, 1, 4, 19, 2, 1], rejected
    [4, 4, 4, 4, 5, 6, 4]. Percentiles interpolate over 7 sorted values: p50 is the 4th, p95 sits
    at 0.95 * 6 = 5.7, so prompt p95 = 14 + 0.7 * (16 - 14) = 15.4, chosen p95 = 4 + 0.7 * 15 =
    14.5, rejected p95 = 5 + 0.7 * 1 = 5.7.

    Chosen is longer only on line 6, the same length on line 5: bias 1/7. Agreement: 0.9, 0.25
    (votes 1 of 4) and 0.5; only 0.25 is below 0.5; mean 1.65 / 3 = 0.55. Weights: one 2.0, six
    1.0: mean 8/7.
    """
    report = _report(_file(STANDARD_LINES))
    assert report.rows == 7
    assert (report.exact_duplicates.count, report.exact_duplicates.example_lines) == (2, [2, 8])
    assert (report.near_duplicates.count, report.near_duplicates.example_lines) == (2, [4, 6])
    assert (report.chosen_equals_rejected.count, report.chosen_equals_rejected.example_lines) == (1, [5])
    assert (report.empty_prompts.count, report.empty_prompts.example_lines) == (1, [7])
    assert report.empty_responses.count == 0 and report.empty_responses.example_lines == []

    lengths = report.lengths
    assert lengths is not None
    assert lengths.prompt.model_dump() == pytest.approx(
        {"min": 0, "mean": 79 / 7, "p50": 12, "p95": 15.4, "max": 16}
    )
    assert lengths.chosen.model_dump() == pytest.approx(
        {"min": 1, "mean": 29 / 7, "p50": 1, "p95": 14.5, "max": 19}
    )
    assert lengths.rejected.model_dump() == pytest.approx(
        {"min": 4, "mean": 31 / 7, "p50": 4, "p95": 5.7, "max": 6}
    )
    line_sizes = [len(json.dumps(row)) for row in STANDARD_LINES if row is not None]
    assert (lengths.line_bytes.min, lengths.line_bytes.max) == (min(line_sizes), max(line_sizes))

    bias = report.length_bias
    assert bias is not None
    assert (bias.chosen_longer, bias.rejected_longer, bias.same_length) == (1, 5, 1)
    assert bias.chosen_longer_share == pytest.approx(1 / 7)

    agreement = report.agreement
    assert (agreement.threshold, agreement.rows_with_agreement) == (0.5, 3)
    assert (agreement.below_threshold.count, agreement.below_threshold.example_lines) == (1, [4])
    assert agreement.mean == pytest.approx(0.55)

    assert report.weights is not None
    assert report.weights.model_dump() == pytest.approx(
        {"rows_weighted": 1, "min": 1.0, "mean": 8 / 7, "max": 2.0}
    )
    assert report.truncation is None


def test_agreement_threshold_is_a_parameter() -> None:
    report = validate_stream([_file(STANDARD_LINES)], agreement_threshold=0.95).report
    assert report.agreement.below_threshold.example_lines == [1, 4, 6]


def test_report_on_a_conversational_file() -> None:
    """Line 2 is line 1 with each message's keys in another order: an exact duplicate. Lines 1
    and 2 have an empty assistant turn in the rejected response. Line 3 has an implicit prompt
    (the shared first turn). Prompt lengths add contents: "Be brief." + "Hi!" = 12."""
    system = {"role": "system", "content": "Be brief."}
    rows: list[dict[str, object] | None] = [
        {
            "prompt": [system, {"role": "user", "content": "Hi!"}],
            "chosen": [{"role": "assistant", "content": "Hello there."}],
            "rejected": [{"role": "assistant", "content": ""}, {"role": "assistant", "content": "Hey"}],
        },
        {
            "prompt": [{"content": "Be brief.", "role": "system"}, {"content": "Hi!", "role": "user"}],
            "chosen": [{"content": "Hello there.", "role": "assistant"}],
            "rejected": [{"content": "", "role": "assistant"}, {"content": "Hey", "role": "assistant"}],
        },
        {
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Go away, please"},
            ],
        },
    ]
    summary = validate_stream([_file(rows)])
    report = summary.report
    assert summary.format is DataFormat.conversational and report.rows == 3
    assert (report.exact_duplicates.count, report.exact_duplicates.example_lines) == (1, [2])
    assert report.near_duplicates.count == 0
    assert (report.empty_responses.count, report.empty_responses.example_lines) == (2, [1, 2])
    assert report.lengths is not None
    assert (report.lengths.prompt.min, report.lengths.prompt.max) == (2, 12)
    assert (report.lengths.chosen.min, report.lengths.chosen.max) == (6, 12)
    assert (report.lengths.rejected.min, report.lengths.rejected.max) == (3, 15)
    assert report.length_bias is not None and report.length_bias.chosen_longer == 2
    assert report.weights is None and report.agreement.rows_with_agreement == 0
    assert report.agreement.mean is None


def test_an_empty_builder_reports_no_rows() -> None:
    report = QualityReportBuilder().build()
    assert (
        report.rows == 0 and report.lengths is None and report.length_bias is None and report.weights is None
    )


def test_the_report_is_a_plain_json_wire_shape() -> None:
    report = _report(_file(STANDARD_LINES))
    dumped = report.model_dump(mode="json")
    assert QualityReport.model_validate(json.loads(json.dumps(dumped))) == report
    assert set(dumped) >= {
        "rows",
        "exact_duplicates",
        "near_duplicates",
        "lengths",
        "length_bias",
        "truncation",
    }


def _example(line: int, prompt: str, chosen: str, rejected: str = "no") -> PreferenceExample:
    return PreferenceExample(
        line=line, format=DataFormat.standard, prompt=prompt, chosen=chosen, rejected=rejected
    )


def _add(builder: QualityReportBuilder, examples: list[PreferenceExample], batch: int = 1000) -> None:
    """Add rows in batches of `batch`, each line 10 bytes."""
    for start in range(0, len(examples), batch):
        part = examples[start : start + batch]
        builder.add(Rows.from_examples(part, [10] * len(part)))


def test_many_rows_sample_percentiles_and_count_every_duplicate() -> None:
    """30,000 rows, chosen lengths cycling 1..1000: beyond the sample size, so p50 and p95 are
    estimates (true values 500.5 and 950.05); min, max and mean stay exact. Then every row again:
    30,000 exact duplicates, which also exercises the hash table's growth."""
    rows = 30_000
    examples = [_example(i + 1, f"prompt {i}", "x" * (i % 1000 + 1)) for i in range(rows)]
    builder = QualityReportBuilder()
    _add(builder, examples)
    first = builder.build()
    assert first.lengths is not None
    chosen = first.lengths.chosen
    assert (chosen.min, chosen.max, chosen.mean) == (1, 1000, pytest.approx(500.5))
    assert chosen.p50 == pytest.approx(500.5, rel=0.03) and chosen.p95 == pytest.approx(950.05, rel=0.02)
    assert first.exact_duplicates.count == 0 and first.near_duplicates.count == 0
    assert rows > SAMPLE_SIZE

    again = QualityReportBuilder()
    _add(again, examples, batch=777)
    assert again.build() == first, "the sample is seeded: the same rows give the same report, however batched"
    _add(again, [replace(example, line=rows + example.line) for example in examples])
    repeated = again.build()
    assert repeated.exact_duplicates.count == rows and repeated.exact_duplicates.example_lines == [
        30_001 + i for i in range(5)
    ]
    assert repeated.near_duplicates.count == 0


def test_near_duplicates_ignore_case_punctuation_and_whitespace() -> None:
    builder = QualityReportBuilder()
    prompts = [
        "Hello, World!",
        "hello world",
        "  HELLO\tworld ",
        "héllo wörld",
        "Héllo Wörld?",
        "hello_world",
        "hello worlds",
        "What is 2+2?",
        "what is 2 + 2",
    ]
    _add(builder, [_example(line, prompt, f"answer {line}") for line, prompt in enumerate(prompts, start=1)])
    near = builder.build().near_duplicates
    assert (near.count, near.example_lines) == (5, [2, 3, 5, 6, 9])


def test_every_whitespace_character_is_ignored() -> None:
    spaces = [c for c in map(chr, range(128)) if c.isspace()] + ["\u00a0", "\u2003"]
    for space in spaces:
        for text in (f"Hello{space}World!", f"{space}hello world{space}", f"hello{space}{space}world"):
            assert _normalise(text) == "helloworld", repr(text)
    assert _normalise(" \t ") == "" and _normalise("") == ""


def test_weight_extremes_count_the_rows_without_a_weight_as_one() -> None:
    def weights(*values: float) -> WeightStats | None:
        builder = QualityReportBuilder()
        _add(
            builder,
            [replace(_example(i, f"q{i}", "yes"), weight=weight) for i, weight in enumerate(values, 1)],
        )
        return builder.build().weights

    assert weights(2.0, 0.5) == WeightStats(rows_weighted=2, min=0.5, mean=1.25, max=2.0)
    assert weights(1.0, 3.0) == WeightStats(rows_weighted=1, min=1.0, mean=2.0, max=3.0)
    assert weights(1.0, 0.25, 1.0) == WeightStats(rows_weighted=1, min=0.25, mean=0.75, max=1.0)
    assert weights(1.0, 1.0) is None


def test_truncation_share() -> None:
    """max_length 29: 10 + 5 fits; 10 + 20 = 30 and 0 + 30 do not, so 2 of 3 pairs are cut."""
    assert truncation_share([(10, 5, 3), (10, 20, 1), (0, 30, 30)], max_length=29) == pytest.approx(2 / 3)
    assert truncation_share([(10, 5, 3), (10, 20, 1)], max_length=30) == 0.0
    assert truncation_share([], max_length=8) == 0.0
    with pytest.raises(ValueError, match="max_length"):
        truncation_share([(1, 1, 1)], max_length=0)
