"""Webhook tests: a real HTTP receiver on loopback that checks every request's signature, databases on
SQLite and Postgres, a clock the test moves by hand, the app with its own dispatcher, and DNS answers a
test can re-point.

Receivers listen on 127.0.0.1, which webhooks may not reach by default: settings here allow it with
`webhook_allowed_hosts` (RECEIVER_HOSTS), as an operator would for an internal receiver."""

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from alignd import db
from alignd.app import create_app
from alignd.config import Settings
from tests.api.conftest import client, key, settings
from tests.api.helpers import ADMIN_KEY, bearer
from tests.db.conftest import backend, db_url, postgres

__all__ = ["backend", "client", "db_url", "key", "postgres", "settings"]

RECEIVER_HOSTS = ["127.0.0.1"]
"""ALIGND_WEBHOOK_ALLOWED_HOSTS for tests whose receivers listen on loopback."""
ROW = {"prompt": "Name a fruit.", "chosen": " apple.", "rejected": " dog."}


def expected_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks signature, computed here from the spec rather than by alignd's code."""
    key_bytes = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key_bytes, msg_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    signature_ok: bool

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST, checks its signature against `secret`, and
    answers with the next status in `answers` (then `default`), after `delay` seconds. With an
    `ssl_context` it speaks HTTPS."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.secret: str | None = None
        self.answers: list[int] = []
        self.default = 200
        self.delay = 0.0
        self.received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                signature_ok = (
                    receiver.secret is not None
                    and expected_signature(
                        receiver.secret,
                        headers.get("webhook-id", ""),
                        headers.get("webhook-timestamp", ""),
                        body,
                    )
                    in headers.get("webhook-signature", "").split()
                )
                with receiver._changed:
                    status = receiver.answers.pop(0) if receiver.answers else receiver.default
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver, to hit the sender's timeout
                payload = b"ok" if 200 <= status < 300 else b"receiver says no"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the sender gave up waiting
                    pass
                with receiver._changed:
                    receiver.received.append(Received(headers, body, signature_ok))
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hooks"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests, once they have arrived (AssertionError after `timeout`)."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            assert arrived, f"the receiver got {len(self.received)} of {count} requests in {timeout}s"
            return list(self.received[:count])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start receivers on demand; all are stopped after the test."""
    started: list[Receiver] = []

    def start(ssl_context: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(ssl_context))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def receiver(receivers: Callable[..., Receiver]) -> Receiver:
    return receivers()


class Clock:
    """Unix time that moves only when the test says so.

    It starts a minute ahead of the real clock: deliveries are due from their row's real creation time,
    so rows a test makes after setting up its database (seconds on a busy machine) are still due."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 60)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A fresh, migrated database per test: a dispatcher claims every due delivery it can see."""
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    yield db.session_factory(engine)
    engine.dispose()


@dataclass
class Dns:
    """Answers for names under `.test`, which a test points (and re-points) at addresses; every other
    lookup goes to the system's resolver. It stands in for DNS, outside alignd, so the addresses alignd
    checks and connects to can change between registration and delivery the way a rebound name does."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def point(self, name: str, *addresses: str, then: list[str] | None = None) -> None:
        """`name` resolves to `addresses`; with `then`, only at the next lookup and to `then` after it."""
        self.answers[name] = [list(addresses)] + ([then] if then is not None else [])


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    fake = Dns()
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".test"):
            return system(host, port, *args, **kwargs)
        fake.lookups.append(name)
        queue = fake.answers.get(name)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, int(port or 0), 0, 0) if ":" in a else (a, int(port or 0)),
            )
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return fake


class LiveApps:
    """Starts the app with its controller and webhook dispatcher (polling fast, retrying fast), with
    settings overridden per start; stops what is still running after the test. The controller makes one
    pass at start (before any job exists) and then waits an hour, so it never launches a trainer."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.defaults: dict[str, Any] = {
            "data_dir": tmp_path / "alignd",
            "database_url": db_url,
            "admin_key": ADMIN_KEY,
            "public_url": "http://testserver",
            "run_controller": True,
            "controller_interval_seconds": 3600,
            "webhook_poll_seconds": 0.05,
            "webhook_backoff_seconds": 0.05,
            "webhook_max_attempts": 3,
            "webhook_timeout_seconds": 5.0,
            "webhook_allowed_hosts": RECEIVER_HOSTS,
        }
        self.running: list[TestClient] = []

    def start(self, **overrides: Any) -> TestClient:
        client = TestClient(create_app(Settings(**(self.defaults | overrides))))
        self.running.append(client.__enter__())
        return self.running[-1]

    def stop(self, client: TestClient) -> None:
        self.running.remove(client)
        client.__exit__(None, None, None)


@pytest.fixture
def live_apps(tmp_path: Path, db_url: str) -> Iterator[LiveApps]:
    apps = LiveApps(tmp_path, db_url)
    yield apps
    for app in reversed(apps.running):
        apps.stop(app)


def new_project(client: TestClient, tmp_path: Path, name: str = "hooks") -> str:
    """A project's API key, with a base model registered for its jobs."""
    admin = bearer(ADMIN_KEY)
    project = client.post("/v1/admin/projects", json={"name": name}, headers=admin)
    key = client.post(f"/v1/admin/projects/{project.json()['id']}/api_keys", json={}, headers=admin)
    model_dir = tmp_path / "base-model"
    if not model_dir.exists():
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        registered = client.post("/v1/models", json={"id": "tiny", "source": str(model_dir)}, headers=admin)
        assert registered.status_code == 200, registered.text
    value: str = key.json()["value"]
    return value


def cancelled_job(client: TestClient, key: str) -> str:
    """A job created and cancelled through the API: the cancel is the event."""
    data = "".join(json.dumps(ROW) + "\n" for _ in range(20)).encode()
    upload = client.post(
        "/v1/files", files={"file": ("t.jsonl", data)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert upload.status_code == 200, upload.text
    body = {"model": "tiny", "training_file": upload.json()["id"], "method": {"type": "dpo"}}
    job = client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key))
    assert job.status_code == 200, job.text
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job.json()['id']}/cancel", headers=bearer(key))
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    job_id: str = job.json()["id"]
    return job_id


def register(client: TestClient, key: str, url: str, receiver: Receiver | None = None) -> str:
    """Register `url`; the receiver, if given, learns the secret to check signatures with."""
    created = client.post("/v1/webhooks", json={"url": url}, headers=bearer(key))
    assert created.status_code == 200, created.text
    if receiver is not None:
        receiver.secret = created.json()["secret"]
    endpoint_id: str = created.json()["id"]
    return endpoint_id


def settled_delivery(
    client: TestClient,
    key: str,
    endpoint_id: str,
    done: Callable[[dict[str, Any]], bool] = lambda d: d["status"] != "pending",
    count: int = 1,
) -> dict[str, Any]:
    """The endpoint's newest delivery once it has `count` and `done` holds for the newest (the dispatcher
    writes results after sending)."""
    deadline = time.monotonic() + 30
    while True:
        page = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=bearer(key)).json()
        if len(page["data"]) >= count and done(page["data"][0]):
            assert len(page["data"]) == count
            delivery: dict[str, Any] = page["data"][0]
            return delivery
        assert time.monotonic() < deadline, page
        time.sleep(0.05)
