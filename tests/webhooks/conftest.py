"""Webhook tests: a real HTTP receiver on loopback that checks every request's signature, databases on
SQLite and Postgres, and a clock the test moves by hand."""

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from alignd import db
from tests.api.conftest import client, key, settings
from tests.db.conftest import backend, db_url, postgres

__all__ = ["backend", "client", "db_url", "key", "postgres", "settings"]


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
    answers with the next status in `answers` (then `default`), after `delay` seconds."""

    def __init__(self) -> None:
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
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

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
def receivers() -> Iterator[Callable[[], Receiver]]:
    """Start receivers on demand; all are stopped after the test."""
    started: list[Receiver] = []

    def start() -> Receiver:
        started.append(Receiver())
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@pytest.fixture
def receiver(receivers: Callable[[], Receiver]) -> Receiver:
    return receivers()


class Clock:
    """Unix time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 1)

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
