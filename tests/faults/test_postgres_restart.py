"""Postgres stopped and started again while requests keep coming: every request in between gets a 503
with Retry-After (never a 500), and requests succeed again once it is back, without restarting alignd."""

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import ADMIN_KEY, bearer
from tests.faults.conftest import Api, OwnPostgres, assert_unavailable, live_server, rows, wait_until


@pytest.fixture
def api(tmp_path: Path, own_postgres: OwnPostgres) -> Iterator[Api]:
    with live_server(
        data_dir=tmp_path / "alignd",
        database_url=own_postgres.create_database(),
        readyz_cache_seconds=0,
        readyz_min_free_bytes=0,
    ) as running:
        yield running


@dataclass
class Load:
    """Threads sending a mix of reads and writes until stopped; every answer is kept."""

    requests: list[Callable[[], httpx.Response]]
    answers: list[httpx.Response] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "Load":
        self._threads = [threading.Thread(target=self._run, args=(r,), daemon=True) for r in self.requests]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, request: Callable[[], httpx.Response]) -> None:
        while not self.stop.is_set():
            self.answers.append(request())

    def count(self, status: int, since: int = 0) -> int:
        return sum(1 for a in self.answers[since:] if a.status_code == status)


def test_requests_during_a_postgres_restart_get_503_then_succeed(
    api: Api, own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    file_id = api.upload(rows()).json()["id"]
    job_id = api.create_job(file_id, tmp_path / "model")
    names = (f"load-{n}" for n in itertools.count())
    admin = bearer(ADMIN_KEY)
    requests: list[Callable[[], httpx.Response]] = [
        lambda: api.client.get(f"/v1/fine_tuning/jobs/{job_id}"),
        lambda: api.client.get("/v1/files"),
        lambda: api.client.post("/v1/admin/projects", json={"name": next(names)}, headers=admin),
        lambda: api.client.get("/readyz"),
    ]
    with Load(requests) as load:
        wait_until(lambda: load.count(200) >= 20, what="requests succeeding before the restart")
        stopped_at = len(load.answers)
        own_postgres.stop()
        wait_until(lambda: load.count(503, stopped_at) >= 8, what="503s while Postgres is down")
        own_postgres.start()
        started_at = len(load.answers)
        wait_until(lambda: load.count(200, started_at) >= 20, what="requests succeeding after the restart")

    statuses = {a.status_code for a in load.answers}
    assert statuses == {200, 503}, f"only successes and 503s, never a 500: {statuses}"
    for answer in load.answers:
        if answer.status_code == 503:
            assert_unavailable(answer, "database_unavailable")
            assert "ALIGND_DATABASE_URL" in answer.json()["error"]["message"]
    for request in requests:
        assert request().status_code == 200, "every kind of request works again after the restart"
