"""Reading a stored file for the estimate: every row's keys, and an even sample of rows to tokenize."""

import json

from alignd.estimates.scan import sample_stride, scan_chat_file, scan_file

ROWS = [{"prompt": f"Question {i}?", "chosen": " Yes.", "rejected": " No."} for i in range(30)]


def chunks(text: str, size: int = 64) -> list[bytes]:
    data = text.encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_small_file_is_read_whole() -> None:
    text = "".join(json.dumps(row) + "\n" for row in ROWS)

    scan = scan_file(chunks(text), rows=30, max_rows=100, max_line_bytes=1 << 20)

    assert (scan.rows, scan.stride, scan.sampled) == (30, 1, False)
    assert [example.prompt for example in scan.examples] == [row["prompt"] for row in ROWS]
    pairs, prompts, lines = scan.keys.columns()
    assert len(pairs) == len(prompts) == 30
    assert lines.tolist() == list(range(1, 31))


def test_a_large_file_is_sampled_evenly_and_blank_lines_keep_their_numbers() -> None:
    text = "".join(json.dumps(row) + "\n\n" for row in ROWS)  # a blank line after every row

    scan = scan_file(chunks(text, 100), rows=30, max_rows=10, max_line_bytes=1 << 20)

    assert (scan.rows, scan.stride, scan.sampled) == (30, 3, True)
    assert [example.prompt for example in scan.examples] == [ROWS[i]["prompt"] for i in range(0, 30, 3)]
    assert [example.line for example in scan.examples] == [2 * i + 1 for i in range(0, 30, 3)]
    assert len(scan.keys.columns()[0]) == 30


def test_the_stride_tokenizes_at_most_max_rows() -> None:
    for rows in (1, 9, 10, 11, 99, 100, 101, 12_345):
        stride = sample_stride(rows, 10)
        assert len(range(0, rows, stride)) <= 10
        assert stride == 1 or len(range(0, rows, stride - 1)) > 10


def test_a_chat_file_is_sampled_evenly_with_the_chat_reports_keys() -> None:
    chats = [
        {"messages": [{"role": "user", "content": f"Q {i % 5}?"}, {"role": "assistant", "content": f"A{i}."}]}
        for i in range(30)
    ]
    text = "".join(json.dumps(row) + "\n\n" for row in chats)

    scan = scan_chat_file(chunks(text, 100), rows=30, max_rows=10, max_line_bytes=1 << 20)

    assert (scan.rows, scan.stride, scan.sampled) == (30, 3, True)
    assert [example.line for example in scan.examples] == [2 * i + 1 for i in range(0, 30, 3)]
    conversations, prompts, lines = scan.keys.columns()
    assert lines.tolist() == [2 * i + 1 for i in range(30)]
    assert len(set(conversations.tolist())) == 30  # every answer differs
    assert len(set(prompts.tolist())) == 5  # five questions, asked six times each
