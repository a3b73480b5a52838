"""How the trainer tells the world what it is doing: JSON lines on stdout, batched POSTs, exit summary.

Offline runs print every payload as one JSON line (the local launcher stores stdout as the job's
log). Managed runs also POST them in `ReportBatch`es to the control plane with the job's token.
The training loop must never wait on the network, so `HttpReporter` only buffers on the caller's
thread; a background thread sends, retries through short outages and heartbeats while the loop is
busy (loading a model can take minutes and the controller fails silent trainers). When the
control plane stays unreachable past a bounded budget the reporter records an
`InfrastructureError` and raises it on the next call, so the trainer exits with the retriable
code and resumes from its last checkpoint.
"""

import logging
import os
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TextIO
from urllib.parse import quote

import httpx

from alignd.contract import CheckpointReport, MetricPoint, ReportBatch, TerminationSummary, TrainerEvent
from alignd_trainer.errors import InfrastructureError
from alignd_trainer.managed import managed_job
from alignd_trainer.retry import RetryPolicy, send_with_retries

log = logging.getLogger(__name__)

Payload = TrainerEvent | MetricPoint | CheckpointReport

"""All three set: managed run (report to the control plane); none set: offline run."""

TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_LOG_ENV = "ALIGND_TERMINATION_LOG"
TERMINATION_MESSAGE_MAX_BYTES = 4096
"""Kubernetes keeps at most this many bytes of a container's termination message."""
TERMINATION_REASON_MAX_CHARS = 200


class Reporter(ABC):
    """Where the trainer's events, metric points and checkpoint reports go.

    Subclasses implement `emit`; `event`/`metrics`/`checkpoint` exist so call sites read as what
    they report and type-check the payload. Usable as a context manager that closes on exit.
    """

    def event(self, e: TrainerEvent) -> None:
        self.emit(e)

    def metrics(self, m: MetricPoint) -> None:
        self.emit(m)

    def checkpoint(self, c: CheckpointReport) -> None:
        self.emit(c)

    @abstractmethod
    def emit(self, payload: Payload) -> None:
        """Take one payload; may buffer it (see `flush`)."""

    @abstractmethod
    def flush(self) -> None:
        """Deliver everything taken so far before returning (e.g. before exiting or after a checkpoint)."""

    def close(self, timeout: float | None = None) -> None:
        """Flush and release resources; raises the delivery error, if any, so it is not lost.

        `timeout` bounds how long undeliverable reports may hold up an exiting trainer."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class StdoutReporter(Reporter):
    """One JSON line per payload on a text stream (stdout by default), flushed at once.

    Flushing per line keeps `kubectl logs` and the local launcher's log live; the lock keeps
    lines whole when several threads report.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def emit(self, payload: Payload) -> None:
        line = payload.model_dump_json() + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


class MultiReporter(Reporter):
    """Fan-out: every payload goes to every reporter, even when an earlier one raises.

    The first error is re-raised after all reporters had their turn, so a dead control plane
    does not also silence stdout.
    """

    def __init__(self, *reporters: Reporter) -> None:
        self._reporters = reporters

    def emit(self, payload: Payload) -> None:
        self._each(lambda r: r.emit(payload))

    def flush(self) -> None:
        self._each(lambda r: r.flush())

    def close(self, timeout: float | None = None) -> None:
        self._each(lambda r: r.close(timeout))

    def _each(self, call: Callable[[Reporter], None]) -> None:
        first: Exception | None = None
        for reporter in self._reporters:
            try:
                call(reporter)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


class HttpReporter(Reporter):
    """Batches payloads and POSTs them as `ReportBatch` JSON to the control plane's internal API.

    `emit` only appends to a buffer. A background thread sends the buffer every `flush_interval`
    seconds (sooner once `max_batch` payloads wait) and sends an empty batch, the heartbeat, when
    nothing went out for `heartbeat_interval` seconds. Batches go out one at a time, in order, at
    most `max_batch` payloads each; every batch carries an `Idempotency-Key` that stays the same
    across its retries, so the server can drop a batch it already stored when a response was lost.

    Each batch is sent under the trainer's one `RetryPolicy` (connection errors, timeouts, 429 and
    5xx retried with backoff or after `Retry-After`, for at most `max_retries` retries and
    `give_up_after` seconds); when it runs out, and at once on any other 4xx, the reporter records
    an `InfrastructureError` that `emit`, `flush` and `close` raise from then on. The token is sent
    only in the `Authorization` header; it is never logged nor put in an error message.
    """

    def __init__(
        self,
        api_url: str,
        job_id: str,
        token: str,
        *,
        flush_interval: float = 2.0,
        max_batch: int = 200,
        timeout: float = 10.0,
        max_retries: int = 10,
        give_up_after: float = 300.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        heartbeat_interval: float = 30.0,
    ) -> None:
        _check_settings(api_url, flush_interval, max_batch, timeout, heartbeat_interval, give_up_after)
        self._job_id = job_id
        self._endpoint = f"{api_url.rstrip('/')}/internal/v1/jobs/{quote(job_id, safe='')}/report"
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._policy = RetryPolicy(max_retries, give_up_after, backoff_base, backoff_max)
        self._heartbeat_interval = heartbeat_interval
        self._client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

        self._lock = threading.Lock()  # guards _pending, _error, _closed
        self._send_lock = threading.Lock()  # one POST at a time, so batches arrive in order
        self._pending: list[Payload] = []
        self._error: InfrastructureError | None = None
        self._closed = False
        self._key_prefix = uuid.uuid4().hex  # a restarted trainer must not reuse keys
        self._sequence = 0
        self._last_sent = time.monotonic()

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alignd-reporter", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"HttpReporter(endpoint={self._endpoint!r})"

    def emit(self, payload: Payload) -> None:
        with self._lock:
            self._raise_if_failed()
            if self._closed:
                raise RuntimeError("the reporter is closed")
            self._pending.append(payload)
            full = len(self._pending) >= self._max_batch
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Send everything buffered now, on the caller's thread, retrying as the background does."""
        self._send_pending(heartbeat=False)

    def close(self, timeout: float | None = None) -> None:
        """Stop the background thread, send what is left, and raise a recorded delivery error.

        With `timeout`, retries give up once that many seconds have passed, so a trainer that is
        being stopped while the control plane is unreachable still exits with its summary."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if timeout is not None:
                self._policy.give_up_after = min(self._policy.give_up_after, timeout)
        self._closing.set()
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self._send_pending(heartbeat=False)
        finally:
            self._client.close()

    def _run(self) -> None:
        """The background loop: wake on timer or a full buffer, send, heartbeat; stop on failure."""
        while not self._stop.is_set():
            self._wake.wait(self._seconds_until_due())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._send_pending(heartbeat=True)
            except InfrastructureError:
                return  # recorded; the training thread raises it on its next call
            except Exception as exc:  # a dead thread must not leave the trainer reporting into a void
                log.exception("the reporter thread failed")
                with self._lock:
                    self._error = self._error or InfrastructureError(f"the reporter thread failed: {exc!r}")
                return

    def _seconds_until_due(self) -> float:
        until_heartbeat = self._heartbeat_interval - (time.monotonic() - self._last_sent)
        return max(0.0, min(self._flush_interval, until_heartbeat))

    def _send_pending(self, *, heartbeat: bool) -> None:
        with self._send_lock:
            with self._lock:
                self._raise_if_failed()
            while batch := self._take_batch():
                self._post(batch)
            if heartbeat and time.monotonic() - self._last_sent >= self._heartbeat_interval:
                self._post([])

    def _take_batch(self) -> list[Payload]:
        with self._lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        return batch

    def _post(self, payloads: Sequence[Payload]) -> None:
        """POST one batch with retries; on final failure record the error for every later call."""
        body = _to_batch(payloads).model_dump_json()
        key = f"{self._key_prefix}-{self._sequence}"
        self._sequence += 1
        try:
            self._post_with_retries(body, key)
        except InfrastructureError as err:
            with self._lock:
                self._error = self._error or err
            raise
        self._last_sent = time.monotonic()

    def _post_with_retries(self, body: str, key: str) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        response = send_with_retries(
            lambda: self._client.post(self._endpoint, content=body, headers=headers),
            what=f"report to the control plane at {self._endpoint}",
            policy=self._policy,
            pause=self._pause,
        )
        if not response.is_success:
            raise InfrastructureError(self._rejection_message(response))

    def _pause(self, seconds: float) -> None:
        """Wait between retries; a close() with a timeout wakes a long backoff so its shorter budget
        applies at once."""
        if self._closing.wait(seconds):
            time.sleep(min(seconds, 0.2))

    def _rejection_message(self, response: httpx.Response) -> str:
        status = response.status_code
        if status in (401, 403):
            return (
                f"the control plane rejected the job token for job {self._job_id} (HTTP {status}): "
                "the token is invalid or the job has already ended"
            )
        if status == 404:
            return (
                f"the control plane does not know job {self._job_id} (HTTP 404): "
                "it was deleted, or this trainer was started for a job that does not exist"
            )
        detail = response.text[:500]
        return f"the control plane refused a report batch for job {self._job_id} (HTTP {status}): {detail}"

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def _check_settings(
    api_url: str,
    flush_interval: float,
    max_batch: int,
    timeout: float,
    heartbeat_interval: float,
    give_up_after: float,
) -> None:
    """Fail at construction, not minutes later in the background thread."""
    if not api_url.startswith(("http://", "https://")):
        raise ValueError(f"api_url must be an http(s) URL, got {api_url!r}")
    if min(flush_interval, timeout, heartbeat_interval, give_up_after) <= 0 or max_batch < 1:
        raise ValueError("intervals, timeout and give_up_after must be positive and max_batch at least 1")


def _to_batch(payloads: Sequence[Payload]) -> ReportBatch:
    return ReportBatch(
        events=[p for p in payloads if isinstance(p, TrainerEvent)],
        metrics=[p for p in payloads if isinstance(p, MetricPoint)],
        checkpoints=[p for p in payloads if isinstance(p, CheckpointReport)],
    )


def reporter_from_env(environ: Mapping[str, str]) -> Reporter:
    """Managed run (stdout + control plane) when the launcher set all of `MANAGED_ENV`, else stdout."""
    job = managed_job(environ)
    if job is None:
        return StdoutReporter()
    return MultiReporter(StdoutReporter(), HttpReporter(job.api_url, job.job_id, job.token))


def termination_log_path(environ: Mapping[str, str]) -> Path | None:
    """Where to write the termination message, or None where nobody reads one.

    Kubernetes creates /dev/termination-log in every container; elsewhere (a laptop, plain
    Docker) we must not create files in /dev. `ALIGND_TERMINATION_LOG` moves it (tests, or a pod
    with a custom terminationMessagePath) and is used when its directory exists.
    """
    override = environ.get(TERMINATION_LOG_ENV)
    if override:
        path = Path(override)
        return path if path.parent.is_dir() else None
    return TERMINATION_LOG if TERMINATION_LOG.exists() else None


def termination_line(summary: TerminationSummary, limit: int = TERMINATION_MESSAGE_MAX_BYTES) -> str:
    """The summary as one JSON line (newline included) of at most `limit` UTF-8 bytes.

    Kubernetes cuts longer messages at the byte limit, which leaves invalid JSON; we shorten
    `reason` to a sane length, then `message`, marking each cut with "…", so the line always parses.
    """
    if len(summary.reason) > TERMINATION_REASON_MAX_CHARS:
        summary = summary.model_copy(
            update={"reason": summary.reason[: TERMINATION_REASON_MAX_CHARS - 1] + "…"}
        )
    for field in ("message", "reason"):
        summary = _shorten_to_fit(summary, field, limit)
    return summary.model_dump_json() + "\n"


def _shorten_to_fit(summary: TerminationSummary, field: str, limit: int) -> TerminationSummary:
    """Keep the longest prefix of `field` that fits (binary search: JSON escapes make bytes per
    character anywhere from 1 to 6)."""
    text: str = getattr(summary, field)
    if _line_bytes(summary) <= limit:
        return summary

    def cut(n: int) -> TerminationSummary:
        return summary.model_copy(update={field: text[:n] + "…" if n >= 0 else ""})

    low, high = -1, len(text) - 1  # invariant: cut(low) fits or low == -1 (the field emptied)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if _line_bytes(cut(mid)) <= limit else (low, mid - 1)
    return cut(low)


def _line_bytes(summary: TerminationSummary) -> int:
    return len(summary.model_dump_json().encode()) + 1


def write_termination_message(summary: TerminationSummary, path: Path | str | None = None) -> Path | None:
    """Write the exit summary where Kubernetes shows it on the pod (`kubectl describe`, the Job).

    `path` defaults to `termination_log_path(os.environ)`. Returns the path written, or None when
    there is nowhere to write or the write failed: the exit code still tells the story, so a
    failure here is logged, never raised on the way out.
    """
    target = Path(path) if path is not None else termination_log_path(os.environ)
    if target is None or not target.parent.is_dir():
        return None
    try:
        target.write_text(termination_line(summary), encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", target, exc)
        return None
    return target
