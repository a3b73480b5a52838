"""Validating a ~64 MB stream in 1 MiB chunks, never held whole: memory stays flat (below a quarter of the
stream) while the duplicate tables grow with every row. Throughput is measured by bench/api_bench.py."""

import time
import tracemalloc
from collections.abc import Iterator

import pytest

from alignd.datasets import DatasetSummary, validate_stream

CHUNK = 1 << 20
TOTAL = 64 * CHUNK
PEAK_LIMIT = 16 * CHUNK


def _row(i: int, conversational: bool) -> bytes:
    """About 1 KB; every prompt distinct, so the duplicate tables grow with every row."""
    chosen = b"Water evaporates, rises, cools into clouds and falls as rain. " * 8
    rejected = b"It just rains sometimes. " * 10
    if conversational:
        return (
            b'{"prompt": [{"role": "system", "content": "Be clear."},'
            b' {"role": "user", "content": "Question %d: how does the water cycle work?"}],'
            b' "chosen": [{"role": "assistant", "content": "%s"}],'
            b' "rejected": [{"role": "assistant", "content": "%s"}], "votes": [%d, 2]}\n'
        ) % (i, chosen, rejected, i % 7)
    return (
        b'{"prompt": "Question %d: how does the water cycle work?", "chosen": "%s", "rejected": "%s"}\n'
        % (
            i,
            chosen + b"Row %d." % i,
            rejected,
        )
    )


def _stream(total: int, *, conversational: bool = False) -> Iterator[bytes]:
    """`total` bytes or a little more (the last row is whole), in 1 MiB chunks cut mid-row."""
    buffer = bytearray()
    produced = row = 0
    while produced < total or buffer:
        while len(buffer) < CHUNK and produced + len(buffer) < total:
            buffer += _row(row, conversational)
            row += 1
        chunk = bytes(buffer[:CHUNK])
        del buffer[:CHUNK]
        produced += len(chunk)
        yield chunk


def _timed(conversational: bool) -> tuple[DatasetSummary, float]:
    start = time.perf_counter()
    summary = validate_stream(_stream(TOTAL, conversational=conversational), max_total_bytes=2 * TOTAL)
    return summary, time.perf_counter() - start


@pytest.mark.slow
def test_validating_a_large_stream_keeps_memory_flat(capsys: pytest.CaptureFixture[str]) -> None:
    tracemalloc.start()
    try:
        summary, seconds = _timed(conversational=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.bytes >= TOTAL and summary.rows == summary.report.rows > 60_000
    assert summary.report.exact_duplicates.count == 0
    with capsys.disabled():
        print(
            f"\nvalidated {summary.bytes / 1e6:.0f} MB, {summary.rows} rows under tracemalloc "
            f"in {seconds:.1f} s: peak {peak / 2**20:.1f} MiB traced"
        )
    assert peak < PEAK_LIMIT, f"peak {peak / 2**20:.1f} MiB"
