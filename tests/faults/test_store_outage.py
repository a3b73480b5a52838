"""An S3 endpoint that hangs (SIGSTOP) or dies (SIGKILL) under a live server: liveness and reads that need
only the database keep answering; readiness probes and store calls fail with a 503 within the store's
timeouts instead of piling up on the request threads."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults.conftest import Api, MotoProcess, assert_unavailable, live_server, rows, s3_fields

PROBES = 60
"""More readiness probes at once than the server's request thread pool has threads (40)."""


@pytest.fixture
def api(tmp_path: Path, moto: MotoProcess) -> Iterator[Api]:
    with live_server(
        data_dir=tmp_path / "alignd",
        **s3_fields(moto.endpoint),
        s3_connect_timeout_seconds=0.5,
        s3_read_timeout_seconds=1.0,
        s3_retries=1,
        readyz_timeout_seconds=1.0,
        readyz_cache_seconds=0.5,
        readyz_min_free_bytes=0,
    ) as running:
        yield running


def test_a_hung_store_does_not_take_the_api_down(api: Api, moto: MotoProcess, tmp_path: Path) -> None:
    uploaded = api.upload(rows())
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    job_id = api.create_job(file_id, tmp_path / "model")

    moto.stop()  # no probe before this one: a cached "ready" would answer the first probes
    with ThreadPoolExecutor(max_workers=PROBES + 4) as pool:
        probes = [pool.submit(api.client.get, "/readyz") for _ in range(PROBES)]
        download = pool.submit(api.client.get, f"/v1/files/{file_id}/content")
        upload = pool.submit(api.upload, rows(5))

        # While all of those wait on the store, what needs only the process or the database answers.
        assert api.client.get("/healthz", timeout=10).json() == {"status": "ok"}
        status = api.client.get(f"/v1/fine_tuning/jobs/{job_id}", timeout=10)
        assert status.status_code == 200 and status.json()["status"] == "queued"
        listed = api.client.get("/v1/files", timeout=10)
        assert listed.status_code == 200 and [f["id"] for f in listed.json()["data"]] == [file_id]

        for probe in probes:
            assert_unavailable(probe.result(), "unavailable")
        assert_unavailable(download.result(), "store_unavailable")
        assert_unavailable(upload.result(), "store_unavailable")
        assert "ALIGND_S3_ENDPOINT" in download.result().json()["error"]["message"]
    assert api.client.get("/healthz", timeout=10).status_code == 200


def test_a_dead_store_answers_503_with_retry_after(api: Api, moto: MotoProcess) -> None:
    uploaded = api.upload(rows())
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]

    moto.kill()
    download = api.client.get(f"/v1/files/{file_id}/content")
    assert_unavailable(download, "store_unavailable")
    assert "unreachable" in download.json()["error"]["message"]
    assert_unavailable(api.upload(rows(5)), "store_unavailable")
    ready = api.client.get("/readyz")
    assert_unavailable(ready, "store_unavailable")
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get(f"/v1/files/{file_id}").status_code == 200
