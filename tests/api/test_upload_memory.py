"""A 200 MB upload through a real server process: its memory stays flat and the stored bytes match."""

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from alignd.server import free_port, peak_rss_mib, start_serve
from tests.api.helpers import ADMIN_KEY, bearer

pytestmark = pytest.mark.slow
TARGET_BYTES = 200 * 1024 * 1024


def _rows() -> Iterator[bytes]:
    written, i = 0, 0
    while written < TARGET_BYTES:
        row = {
            "prompt": f"Question {i}: " + "context " * 60,
            "chosen": f" answer {i}.",
            "rejected": f" nope {i}.",
        }
        line = (json.dumps(row) + "\n").encode()
        written += len(line)
        i += 1
        yield line


def _multipart(digest: "hashlib._Hash") -> Iterator[bytes]:
    boundary = b"alignd-boundary"
    yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
    yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
    yield b"Content-Type: application/jsonl\r\n\r\n"
    batch: list[bytes] = []
    for line in _rows():
        digest.update(line)
        batch.append(line)
        if len(batch) == 1000:
            yield b"".join(batch)
            batch = []
    yield b"".join(batch) + b"\r\n--" + boundary + b"--\r\n"


def test_200_mb_upload_keeps_server_memory_flat(tmp_path: Path) -> None:
    port = free_port()
    server = start_serve(tmp_path, admin_key=ADMIN_KEY, port=port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    try:
        admin = bearer(ADMIN_KEY)
        project = httpx.post(f"{url}/v1/admin/projects", json={"name": "big"}, headers=admin).json()
        key = httpx.post(f"{url}/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()
        baseline = peak_rss_mib(server.pid)
        digest = hashlib.sha256()
        response = httpx.post(
            f"{url}/v1/files",
            content=_multipart(digest),
            timeout=600,
            headers=bearer(key["value"]) | {"Content-Type": "multipart/form-data; boundary=alignd-boundary"},
        )
        assert response.status_code == 200, response.text
        growth = peak_rss_mib(server.pid) - baseline
        file = response.json()
        assert file["bytes"] >= TARGET_BYTES and file["alignd"]["sha256"] == digest.hexdigest()
        stored = tmp_path / "data" / "files" / file["id"]
        assert stored.stat().st_size == file["bytes"]
        assert growth < 150, f"server peak RSS grew by {growth:.0f} MiB for a 200 MB upload"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
