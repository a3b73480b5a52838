"""`alignd serve --workers N`: several processes on one port, started on an empty database, and one
Prometheus view of the requests all of them served."""

import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from alignd.server import free_port, start_serve

pytestmark = pytest.mark.slow
ADMIN_KEY = "sk-alignd-admin-serve-test"


def _requests_counted(metrics: str, route: str) -> float:
    pattern = rf'^alignd_http_requests_total\{{method="GET",route="{re.escape(route)}",status="200"\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, metrics, flags=re.MULTILINE))


def test_two_workers_share_the_port_the_database_and_the_metrics(tmp_path: Path) -> None:
    port = free_port()
    # The data directory is empty: the database is created before the workers start.
    server = start_serve(tmp_path, admin_key=ADMIN_KEY, port=port, workers=2, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        project = httpx.post(f"{url}/v1/admin/projects", json={"name": "w"}, headers=admin)
        assert project.status_code == 200, project.text
        key = httpx.post(
            f"{url}/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=admin
        ).json()["value"]
        # New connections, so the kernel spreads them over both workers.
        for _ in range(40):
            assert httpx.get(f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200

        # Whichever worker answers a scrape (new connections again), it reports the sum over both.
        counts = [_requests_counted(httpx.get(f"{url}/metrics").text, "/v1/files") for _ in range(10)]

        assert counts == [40] * 10
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    assert server.returncode == 0
