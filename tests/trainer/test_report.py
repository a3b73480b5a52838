"""The trainer's reporters against a real HTTP server on loopback that parses every body with the
real contract (`ReportBatch`) and can be scripted to fail, hang up, or throttle."""

import contextlib
import io
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alignd.contract import CheckpointReport, MetricPoint, ReportBatch, TerminationSummary, TrainerEvent
from alignd_trainer.errors import BadInputError, InfrastructureError
from alignd_trainer.report import (
    HttpReporter,
    MultiReporter,
    Payload,
    Reporter,
    StdoutReporter,
    reporter_from_env,
    write_termination_message,
)

JOB_ID = "ftjob-abc123"
TOKEN = "tok-very-secret-0123456789"
WAIT = 5.0
"""Upper bound on any wait for the server; tests finish far sooner when the code is right."""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Hang up without answering (the client sees a transport error)."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None
    """None when the server hung up."""


class ReportServer:
    """What the control plane's report endpoint does, minus storage: validate, answer, remember."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.batches: list[ReportBatch] = []
        self.invalid: list[str] = []
        self.heartbeat = threading.Event()
        self._changed = threading.Condition()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> "ReportServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def reply(self, *replies: Reply) -> None:
        """Answer the next requests with these, then 200 again."""
        self.script.extend(replies)

    def wait_for_requests(self, n: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= n, WAIT), self.requests

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        reply = self.script.popleft() if self.script else Reply()
        try:
            batch = ReportBatch.model_validate_json(body)
        except ValueError as exc:
            self.invalid.append(str(exc))
            reply = Reply(422)
        else:
            if reply.status == 200 and not reply.drop:
                self.batches.append(batch)
                if not (batch.events or batch.metrics or batch.checkpoints):
                    self.heartbeat.set()
        with self._changed:
            status = None if reply.drop else reply.status
            self.requests.append(Seen(path, headers, body, time.monotonic(), status))
            self._changed.notify_all()
        return reply


def _handler(state: ReportServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body, written apart, wait on delayed ACKs

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            reply = state.handle(self.path, dict(self.headers.items()), body)
            if reply.drop:
                self.close_connection = True
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[ReportServer]:
    with ReportServer() as s:
        yield s


@pytest.fixture
def make_reporter(server: ReportServer) -> Iterator[Callable[..., HttpReporter]]:
    """HttpReporters with test-sized budgets (nothing sends on its own unless a test asks), closed
    at teardown."""
    made: list[HttpReporter] = []

    def make(url: str | None = None, **options: Any) -> HttpReporter:
        settings: dict[str, Any] = {
            "flush_interval": 60.0,
            "heartbeat_interval": 60.0,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "give_up_after": 5.0,
            "timeout": 2.0,
            **options,
        }
        reporter = HttpReporter(url or server.url, JOB_ID, TOKEN, **settings)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        with contextlib.suppress(Exception):
            reporter.close()


def _event(i: int, thread: int = 0) -> TrainerEvent:
    return TrainerEvent(message=f"event {i}", data={"i": i, "thread": thread})


def _metric(step: int) -> MetricPoint:
    return MetricPoint(step=step, values={"loss": 0.693, "rewards/accuracies": 0.5})


def test_batches_arrive_in_order_with_every_payload_once(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    reporter = make_reporter(flush_interval=0.01, max_batch=7)
    for step in range(40):
        reporter.metrics(_metric(step))
        reporter.event(_event(step))
    reporter.checkpoint(CheckpointReport(step=40, path="/ckpt/step-40", final=True))
    reporter.close()

    assert server.invalid == []
    assert [m.step for b in server.batches for m in b.metrics] == list(range(40))
    assert [e.data["i"] for b in server.batches for e in b.events] == list(range(40))
    assert [c.step for b in server.batches for c in b.checkpoints] == [40]
    assert all(len(b.events) + len(b.metrics) + len(b.checkpoints) <= 7 for b in server.batches)
    assert {r.path for r in server.requests} == {f"/internal/v1/jobs/{JOB_ID}/report"}
    assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert len(set(keys)) == len(keys)
    assert TOKEN not in repr(reporter)
    with pytest.raises(RuntimeError, match="closed"):
        reporter.event(_event(99))


def test_reporting_from_many_threads_loses_and_reorders_nothing(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    reporter = make_reporter(flush_interval=0.005, max_batch=5)

    def report(thread: int) -> None:
        for i in range(50):
            reporter.event(_event(i, thread))

    threads = [threading.Thread(target=report, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reporter.close()

    events = [e for b in server.batches for e in b.events]
    for thread in range(4):
        assert [e.data["i"] for e in events if e.data["thread"] == thread] == list(range(50))
    assert len(events) == 200


def test_transient_failures_are_retried_without_loss_or_duplicates(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    server.reply(Reply(503), Reply(drop=True), Reply(502))
    reporter = make_reporter()
    for i in range(3):
        reporter.event(_event(i))
    reporter.flush()

    assert [r.status for r in server.requests] == [503, None, 502, 200]
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1, "a retry is the same batch"
    assert len({r.body for r in server.requests}) == 1
    assert [[e.data["i"] for e in b.events] for b in server.batches] == [[0, 1, 2]]

    reporter.event(_event(3))
    reporter.close()
    assert [e.data["i"] for b in server.batches for e in b.events] == [0, 1, 2, 3]


def test_retry_after_from_a_429_is_honoured(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    server.reply(Reply(429, {"Retry-After": "1"}))
    reporter = make_reporter()  # its own backoff would retry after ~10 ms
    reporter.event(_event(0))
    reporter.flush()

    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95
    assert len(server.batches) == 1


@pytest.mark.parametrize(
    ("status", "says"), [(401, "token"), (403, "token"), (404, "does not know"), (400, "400")]
)
def test_client_errors_are_not_retried(
    server: ReportServer, make_reporter: Callable[..., HttpReporter], status: int, says: str
) -> None:
    server.reply(Reply(status))
    reporter = make_reporter()
    reporter.event(_event(0))
    with pytest.raises(InfrastructureError, match=says) as raised:
        reporter.flush()

    assert len(server.requests) == 1
    assert JOB_ID in str(raised.value)
    assert TOKEN not in str(raised.value)
    with pytest.raises(InfrastructureError):
        reporter.event(_event(1))  # the failure sticks: the trainer must exit, not report into a void
    with pytest.raises(InfrastructureError):
        reporter.close()


def test_a_failure_in_the_background_surfaces_at_close(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    server.reply(Reply(401))
    reporter = make_reporter(flush_interval=0.01)
    reporter.event(_event(0))
    server.wait_for_requests(1)

    with pytest.raises(InfrastructureError, match="401"):
        reporter.close()
    assert len(server.requests) == 1


def test_gives_up_after_max_retries(server: ReportServer, make_reporter: Callable[..., HttpReporter]) -> None:
    server.reply(*[Reply(503)] * 10)
    reporter = make_reporter(max_retries=2)
    reporter.event(_event(0))
    with pytest.raises(InfrastructureError, match="3 attempts"):
        reporter.flush()
    assert len(server.requests) == 3


def test_an_unreachable_control_plane_gives_up_within_the_budget(
    make_reporter: Callable[..., HttpReporter], caplog: pytest.LogCaptureFixture, closed_port: int
) -> None:
    reporter = make_reporter(f"http://127.0.0.1:{closed_port}", give_up_after=0.3, max_retries=1000)
    reporter.event(_event(0))
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(InfrastructureError, match="gave up") as raised:
        reporter.flush()

    assert time.monotonic() - started < 2.0
    assert "ConnectError" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert caplog.records, "retries are logged"
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    with pytest.raises(InfrastructureError):
        reporter.metrics(_metric(1))


def test_close_with_a_timeout_bounds_how_long_a_stopping_trainer_waits(
    make_reporter: Callable[..., HttpReporter], closed_port: int
) -> None:
    """A trainer being stopped while the control plane is down must still exit with its summary."""
    reporter = make_reporter(
        f"http://127.0.0.1:{closed_port}",
        give_up_after=300,
        max_retries=1000,
        flush_interval=0.05,
        backoff_base=5.0,
        backoff_max=30.0,
    )
    reporter.event(_event(0))
    time.sleep(0.2)  # the background thread is now in a long backoff
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="gave up"):
        reporter.close(timeout=1.0)
    assert time.monotonic() - started < 5.0


def test_heartbeat_is_an_empty_batch_sent_when_idle(
    server: ReportServer, make_reporter: Callable[..., HttpReporter]
) -> None:
    make_reporter(flush_interval=0.01, heartbeat_interval=0.05)
    assert server.heartbeat.wait(WAIT)
    assert server.batches[0] == ReportBatch()


def test_stdout_reporter_writes_one_json_line_per_payload() -> None:
    stream = io.StringIO()
    event, metric = _event(0), _metric(3)
    checkpoint = CheckpointReport(step=3, path="/ckpt/step-3", metrics={"loss": 0.5})
    with StdoutReporter(stream) as reporter:
        reporter.event(event)
        reporter.metrics(metric)
        reporter.checkpoint(checkpoint)

    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["event", "metrics", "checkpoint"]
    assert TrainerEvent.model_validate_json(lines[0]) == event
    assert MetricPoint.model_validate_json(lines[1]) == metric
    assert CheckpointReport.model_validate_json(lines[2]) == checkpoint


def test_stdout_reporter_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    event = _event(7)
    StdoutReporter().event(event)
    assert TrainerEvent.model_validate_json(capsys.readouterr().out) == event


def test_multi_reporter_reaches_every_reporter_even_when_one_fails() -> None:
    class Broken(Reporter):
        def emit(self, payload: Payload) -> None:
            raise InfrastructureError("down")

        def flush(self) -> None:
            pass

    first, last = io.StringIO(), io.StringIO()
    reporter = MultiReporter(StdoutReporter(first), Broken(), StdoutReporter(last))
    with pytest.raises(InfrastructureError, match="down"):
        reporter.event(_event(0))
    assert first.getvalue() == last.getvalue() != ""


def test_reporter_from_env_is_offline_without_job_variables() -> None:
    assert isinstance(reporter_from_env({"HOME": "/root"}), StdoutReporter)


def test_reporter_from_env_is_managed_with_all_job_variables(server: ReportServer) -> None:
    env = {"ALIGND_JOB_ID": JOB_ID, "ALIGND_API_URL": server.url, "ALIGND_JOB_TOKEN": TOKEN}
    reporter = reporter_from_env(env)
    try:
        assert isinstance(reporter, MultiReporter)
        reporter.event(_event(0))
    finally:
        reporter.close()
    assert [e.data["i"] for b in server.batches for e in b.events] == [0]
    assert server.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"ALIGND_JOB_ID": JOB_ID}, ["ALIGND_API_URL", "ALIGND_JOB_TOKEN"]),
        (
            {"ALIGND_JOB_ID": JOB_ID, "ALIGND_API_URL": "http://x", "ALIGND_JOB_TOKEN": ""},
            ["ALIGND_JOB_TOKEN"],
        ),
        ({"ALIGND_JOB_TOKEN": TOKEN}, ["ALIGND_JOB_ID", "ALIGND_API_URL"]),
    ],
)
def test_reporter_from_env_rejects_a_partial_set(env: dict[str, str], missing: list[str]) -> None:
    with pytest.raises(BadInputError) as raised:
        reporter_from_env(env)
    message = str(raised.value).split("missing:")[1]
    for name in ("ALIGND_JOB_ID", "ALIGND_API_URL", "ALIGND_JOB_TOKEN"):
        assert (name in message) == (name in missing)
    assert TOKEN not in str(raised.value)


def _summary(
    message: str = "CUDA out of memory at batch_size 8", reason: str = "OutOfMemory"
) -> TerminationSummary:
    return TerminationSummary(exit_code=66, reason=reason, message=message, step=120)


def test_termination_message_is_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    assert write_termination_message(_summary(), path) == path

    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    assert TerminationSummary.model_validate_json(text) == _summary()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("€" * 3000, "OutOfMemory"),  # 3 bytes a character
        ("\x00" * 3000, "OutOfMemory"),  # 6 bytes a character once escaped as \u0000
        ("€" * 3000, "R" * 10_000),  # and a reason far longer than a reason should be
    ],
)
def test_termination_message_is_cut_to_what_kubernetes_keeps(
    tmp_path: Path, message: str, reason: str
) -> None:
    path = tmp_path / "termination-log"
    write_termination_message(_summary(message, reason), path)

    raw = path.read_bytes()
    assert len(raw) <= 4096
    assert raw.count(b"\n") == 1
    written = TerminationSummary.model_validate_json(raw)
    assert (written.exit_code, written.step) == (66, 120)
    assert written.message.endswith("…") and message.startswith(written.message[:-1])
    assert len(written.reason) <= 200 and reason.startswith(written.reason.rstrip("…"))
    assert len(raw) > 4090, "cut no more than needed"


def test_termination_log_location_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIGND_TERMINATION_LOG", str(tmp_path / "term.log"))
    assert write_termination_message(_summary()) == tmp_path / "term.log"
    assert TerminationSummary.model_validate_json((tmp_path / "term.log").read_text()) == _summary()

    monkeypatch.setenv("ALIGND_TERMINATION_LOG", str(tmp_path / "missing-dir" / "term.log"))
    assert write_termination_message(_summary()) is None
    assert not (tmp_path / "missing-dir").exists()
