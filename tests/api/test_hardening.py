"""Odd input and secrets hygiene, through a live server: text the databases cannot store is a 400 naming
the field (on SQLite and Postgres), JSON bodies have a limit, failed authentication is rate-limited per
client address, the SQLite file and data dir are private, and signed URLs stay out of the access log."""

import json
import socket
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from alignd.api.ratelimit import FailedAuthLimiter
from alignd.config import Settings
from alignd.server import BackgroundServer, free_port, start_serve
from alignd.storage import store_from_settings
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key

ROWS = b'{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n' * 3
BODY_LIMIT = 64 * 1024
AUTH_LIMIT = 3


@dataclass
class Live:
    client: httpx.Client
    settings: Settings
    port: int
    key: str
    """A project key, already in the server's caller cache (so job reads take the fast path)."""


def _serve(settings: Settings) -> Iterator[Live]:
    port = free_port()
    with (
        BackgroundServer(settings, "127.0.0.1", port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        key = new_project_key(client, "team-a")
        assert client.get("/v1/files", headers=bearer(key)).status_code == 200
        yield Live(client, settings, port, key)


def _settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        admin_key=ADMIN_KEY,
        run_controller=False,
        max_json_body_bytes=BODY_LIMIT,
        auth_failure_limit=AUTH_LIMIT,
    )


@pytest.fixture(scope="module")
def live(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One server per backend (SQLite and Postgres) for the module's tests that leave nothing behind."""
    postgres = request.getfixturevalue("postgres") if backend == "postgres" else None
    url = postgres.create() if postgres is not None else None
    try:
        yield from _serve(_settings(tmp_path_factory.mktemp("alignd"), url))
    finally:
        if postgres is not None and url is not None:
            postgres.drop(url)


@pytest.fixture
def fresh_live(tmp_path: Path) -> Iterator[Live]:
    """A server of its own, for a test that changes what the server remembers (SQLite)."""
    yield from _serve(_settings(tmp_path / "alignd"))


def _assert_refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, "invalid_value", "invalid_request_error")
    assert "cannot be stored" in error["message"]


def _post_json(live: Live, path: str, raw: bytes, key: str) -> httpx.Response:
    """`raw` as written: a JSON escape such as \\u0000 reaches the server exactly so."""
    headers = bearer(key) | {"Content-Type": "application/json"}
    return live.client.post(path, content=raw, headers=headers)


# ---- text the databases cannot store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/v1/admin/projects", rb'{"name": "team\u0000b"}', "name"),
        ("/v1/admin/projects", rb'{"name": "team\ud800b"}', "name"),
        ("/v1/admin/projects", '{"name": "team\ud800b"}'.encode("utf-8", "surrogatepass"), "name"),
        (
            "/v1/fine_tuning/jobs",
            rb'{"model": "m", "training_file": "f", "metadata": {"k": "v\u0000"}}',
            "metadata.k",
        ),
        (
            "/v1/fine_tuning/jobs",
            rb'{"model": "m", "training_file": "f", "metadata": {"k\u0000": "v"}}',
            "metadata.k\\u0000",
        ),
        ("/v1/webhooks", rb'{"url": "https://example.com/\u0000"}', "url"),
    ],
    ids=["nul", "surrogate-escape", "surrogate-utf8", "nested-value", "nested-key", "url"],
)
def test_unstorable_text_in_a_json_field_is_a_400_naming_it(
    live: Live, path: str, raw: bytes, param: str
) -> None:
    key = ADMIN_KEY if path.startswith("/v1/admin") else live.key
    _assert_refused(_post_json(live, path, raw, key), param)
    assert live.client.get("/v1/files", headers=bearer(live.key)).status_code == 200


def test_a_nul_in_a_filename_is_a_400_and_stores_nothing(live: Live) -> None:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.jsonl"\r\n\r\n'
        + ROWS
        + b"\r\n--B--\r\n"
    )
    headers = bearer(live.key) | {"Content-Type": "multipart/form-data; boundary=B"}
    files_before, objects_before = _files(live), _objects(live)
    _assert_refused(live.client.post("/v1/files", content=body, headers=headers), "file")
    assert (_files(live), _objects(live)) == (files_before, objects_before)


def _files(live: Live) -> list[str]:
    return [file["id"] for file in live.client.get("/v1/files", headers=bearer(live.key)).json()["data"]]


def _objects(live: Live) -> set[Path]:
    store = live.settings.resolved_store_dir()
    return {path for path in store.rglob("*") if path.is_file()} if store.exists() else set()


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/v1/fine_tuning/jobs/ftjob-%00x", "job_id"),  # the job-status fast path's own path
        ("/v1/fine_tuning/jobs/ftjob-%00x/events", "job_id"),
        ("/v1/files/file-%00x", "file_id"),
        ("/v1/files?after=file-%00x", "after"),
    ],
)
def test_a_nul_in_a_url_is_a_400_naming_the_parameter(live: Live, url: str, param: str) -> None:
    _assert_refused(live.client.get(url, headers=bearer(live.key)), param)


# ---- body limit ----------------------------------------------------------------------------------------


def _raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """Send `head` and `body` (no more) on a socket; the status and JSON of the answer the server closes
    with. A raw socket, because the point is what the server does before the body has all arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _head(extra: str) -> bytes:
    lines = [
        "POST /v1/admin/projects HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {ADMIN_KEY}",
        "Content-Type: application/json",
        extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(live: Live) -> None:
    status, answer = _raw_request(live.port, _head("Content-Length: 104857600"))
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"
    assert str(BODY_LIMIT) in answer["error"]["message"]


def test_a_chunked_body_is_cut_off_at_the_limit(live: Live) -> None:
    """The body never ends (no last chunk): the answer comes once the limit is passed."""
    data = b'{"name": "' + b"x" * BODY_LIMIT
    status, answer = _raw_request(
        live.port, _head("Transfer-Encoding: chunked"), f"{len(data):x}\r\n".encode() + data + b"\r\n"
    )
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"


def test_uploads_keep_their_own_limit(live: Live) -> None:
    """A file twice the JSON limit is accepted."""
    rows = ROWS * (2 * BODY_LIMIT // len(ROWS))
    response = live.client.post(
        "/v1/files",
        files={"file": ("big.jsonl", rows)},
        data={"purpose": "fine-tune"},
        headers=bearer(live.key),
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(rows) > BODY_LIMIT
    assert (
        live.client.delete(f"/v1/files/{response.json()['id']}", headers=bearer(live.key)).status_code == 200
    )


# ---- failed authentication -----------------------------------------------------------------------------


def test_failed_keys_from_one_address_are_answered_429_until_the_window_passes(fresh_live: Live) -> None:
    live = fresh_live
    for attempt in range(AUTH_LIMIT):
        assert live.client.get("/v1/files", headers=bearer(f"sk-alignd-guess-{attempt}")).status_code == 401
    refused = live.client.get("/v1/files", headers=bearer("sk-alignd-guess-next"))
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["Retry-After"]) <= live.settings.auth_failure_window_seconds
    assert live.client.get("/v1/files", headers=bearer(live.key)).status_code == 429
    assert live.client.get("/healthz").status_code == 200  # no credentials: not an attempt

    other_address = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=f"http://127.0.0.1:{live.port}", transport=other_address) as other:
        assert other.get("/v1/files", headers=bearer(live.key)).status_code == 200


def test_an_address_may_try_again_once_its_failures_leave_the_window() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(limit=2, window_seconds=60, clock=lambda: now[0])
    limiter.record_failure("10.0.0.1")
    now[0] += 10
    limiter.record_failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(50)
    assert limiter.retry_after("10.0.0.2") is None
    now[0] += 50
    assert limiter.retry_after("10.0.0.1") is None  # the first failure left the window
    limiter.record_failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(10)


# ---- secrets at rest and in logs -----------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_data_dir_left_open_by_an_older_version_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "alignd"
    data_dir.mkdir(mode=0o755)
    database = data_dir / "alignd.db"
    older = sqlite3.connect(database)  # held open, so its -wal and -shm exist while the server starts
    try:
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE scratch (x)")
        older.execute("DROP TABLE scratch")
        older.commit()
        files = [database, database.with_name("alignd.db-wal"), database.with_name("alignd.db-shm")]
        for path in [data_dir, *files]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        with BackgroundServer(_settings(data_dir), "127.0.0.1", free_port()):
            assert _mode(data_dir) == 0o700
            assert [_mode(path) for path in files] == [0o600] * 3
    finally:
        older.close()


def test_signatures_stay_out_of_the_access_log(tmp_path: Path) -> None:
    port = free_port()
    with (tmp_path / "access.log").open("wb") as log:
        server = start_serve(tmp_path / "alignd", admin_key=ADMIN_KEY, port=port, timeout=60, stdout=log)
        try:
            store = store_from_settings(
                Settings(data_dir=tmp_path / "alignd", public_url=f"http://127.0.0.1:{port}")
            )
            put = store.presigned_put_url("files/probe", 60)
            get = store.presigned_get_url("files/probe", 60)
            assert httpx.put(put, content=b"bytes").status_code == 200
            assert httpx.get(get).content == b"bytes"
        finally:
            server.terminate()
            server.wait(timeout=30)
    logged = (tmp_path / "access.log").read_text()
    assert "/v1/storage/files/probe" in logged
    for url in (put, get):
        signature = httpx.URL(url).params["signature"]
        assert signature not in logged
    assert logged.count("signature=REDACTED") == 2
