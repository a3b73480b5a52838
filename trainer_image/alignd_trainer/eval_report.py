"""How the evaluator reports: `EvalReport`s as JSON lines on stdout, and POSTed to the control plane.

The evaluator's loop reports once per batch of items, which takes seconds, so reports are sent on the
caller's thread (under the trainer's one retry policy, each with an `Idempotency-Key` that stays the
same across its retries). A background thread only heartbeats while nothing else went out, so a long
model load or a slow judge does not get the run failed as silent.
"""

import sys
import threading
import time
import uuid
from types import TracebackType
from typing import Self, TextIO
from urllib.parse import quote

import httpx

from alignd.contract.evals import EvalReport
from alignd_trainer.errors import InfrastructureError
from alignd_trainer.managed import ManagedJob
from alignd_trainer.retry import RetryPolicy, default_policy, send_with_retries

HEARTBEAT_SECONDS = 30.0


def eval_url(job: ManagedJob, path: str) -> str:
    """An internal endpoint of the eval run the evaluator was started for."""
    return f"{job.api_url.rstrip('/')}/internal/v1/evals/runs/{quote(job.job_id, safe='')}/{path}"


class EvalReporter:
    """stdout always; the control plane too in a managed run (`job` set)."""

    def __init__(
        self,
        job: ManagedJob | None,
        *,
        stream: TextIO | None = None,
        policy: RetryPolicy | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._job = job
        self._policy = policy or default_policy()
        self._heartbeat_seconds = heartbeat_seconds
        self._lock = threading.Lock()
        self._key_prefix = uuid.uuid4().hex
        self._sequence = 0
        self._last_sent = time.monotonic()
        self._error: InfrastructureError | None = None
        self._stop = threading.Event()
        self._client: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        if job is not None:
            self._client = httpx.Client(headers={"Authorization": f"Bearer {job.token}"}, timeout=30)
            self._url = eval_url(job, "report")
            self._thread = threading.Thread(
                target=self._heartbeats, name="alignd-eval-heartbeat", daemon=True
            )
            self._thread.start()

    def __repr__(self) -> str:
        return f"EvalReporter(job={self._job!r})"

    def send(self, report: EvalReport) -> None:
        """Print the report and deliver it; raises InfrastructureError when the control plane stays
        unreachable (or refuses the token: the run was cancelled or ended)."""
        self._stream.write(report.model_dump_json() + "\n")
        self._stream.flush()
        self._post(report)

    def _post(self, report: EvalReport) -> None:
        if self._client is None:
            return
        with self._lock:
            if self._error is not None:
                raise self._error
            key = f"{self._key_prefix}-{self._sequence}"
            self._sequence += 1
            body = report.model_dump_json()
            response = send_with_retries(
                lambda: self._client.post(  # type: ignore[union-attr]
                    self._url,
                    content=body,
                    headers={"Content-Type": "application/json", "Idempotency-Key": key},
                ),
                what=f"report to the control plane at {self._url}",
                policy=self._policy,
            )
            if not response.is_success:
                self._error = InfrastructureError(
                    f"the control plane refused a report of eval run {self._job.job_id if self._job else ''} "
                    f"(HTTP {response.status_code}): {response.text[:300]}"
                )
                raise self._error
            self._last_sent = time.monotonic()

    def _heartbeats(self) -> None:
        while not self._stop.wait(min(self._heartbeat_seconds, 5.0)):
            if time.monotonic() - self._last_sent < self._heartbeat_seconds:
                continue
            try:
                self._post(EvalReport())
            except InfrastructureError:
                return  # recorded; the evaluator's next send raises it

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
