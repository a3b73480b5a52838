"""Upload streams for storage tests: generated lazily, so a test never holds a whole payload."""

import hashlib
from collections.abc import Iterator

MiB = 1024 * 1024


class Boom(Exception):
    """Raised by an upload's iterator, standing in for a validation error mid-stream."""


def payload(n_chunks: int, chunk_size: int = MiB) -> Iterator[bytes]:
    """Deterministic chunks that differ from each other, so a misordered or dropped part shows."""
    for i in range(n_chunks):
        seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
        yield seed * (chunk_size // len(seed))


def failing(n_chunks: int) -> Iterator[bytes]:
    """n_chunks MiB of good data, then the iterator raises."""
    yield from payload(n_chunks)
    raise Boom("invalid line 12345")
