"""Short S3 timeouts do not break large uploads on a slow link: they bound each socket operation, not a
whole request (alignd/storage/s3.py `default_http_client`)."""

from collections.abc import Iterator

import pytest

from alignd.storage import S3Store
from alignd.storage.s3 import PART_SIZE, default_http_client
from tests.faults.conftest import REGION, MotoProcess, SlowLink

RATE = 8 << 20
"""Bytes per second: a 16 MiB part takes about 2 s, four times the connect timeout below."""


@pytest.fixture
def slow_store(moto: MotoProcess) -> Iterator[S3Store]:
    link = SlowLink(moto.endpoint, RATE)
    client = default_http_client(connect_timeout=0.5, read_timeout=5.0, retries=0)
    yield S3Store(
        link.endpoint, "slow", "testing", "testing", region=REGION, secure=False, http_client=client
    )
    link.close()


def test_a_part_slower_to_send_than_the_timeouts_still_uploads(slow_store: S3Store) -> None:
    data = bytes(range(256)) * (PART_SIZE // 256 + 4096)  # one full part and a bit: a multipart upload
    assert slow_store.put_stream(
        "big/object", iter([data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)])
    ) == len(data)
    assert slow_store.size("big/object") == len(data)
    assert b"".join(slow_store.iter_bytes("big/object")) == data
