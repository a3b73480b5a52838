"""The integrations worker: claims due integration runs, feeds each its job's new metric points, and at
the job's end its links, with no transaction open while it talks to W&B or MLflow.

One pass (`run_once`): claim the due `IntegrationRunModel` rows with a compare-and-set on their lock token
that also pushes `next_attempt_at` past an attempt's length (a visibility timeout, as the webhook
dispatcher does); for each, read the job, its credentials and up to `BATCH` metric rows after the run's
cursor; open the sink if this process has none for the run yet, log, and once the job has ended and every
point is sent, finish it; then write the cursor back only if the claim still holds. A failed attempt is
retried with backoff; after ALIGND_INTEGRATIONS_MAX_ATTEMPTS in a row the run is failed and the job gets
a warning event saying which integration stopped and why. The job itself never fails for it.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col

from alignd.config import Settings
from alignd.db import guarded_update
from alignd.errors import InvalidRequest
from alignd.integrations import content
from alignd.integrations.base import IntegrationFailed, Outcome, RunInfo, Sink
from alignd.integrations.credentials import check_tracking_uri, open_credentials
from alignd.integrations.mlflow import MlflowSink
from alignd.integrations.wandb import WandbSink
from alignd.jobs.state import record_event
from alignd.models import IntegrationRunModel, JobModel, MetricModel, new_lock_token
from alignd.secretbox import SecretBox, SecretUnreadable, secret_box
from alignd.webhooks.dispatcher import backoff_seconds

log = logging.getLogger("alignd.integrations")
BATCH = 1000
"""Metric rows sent per run per pass."""
CLAIMS = 16
"""Runs one pass takes on."""
NAMES = {"wandb": "W&B", "mlflow": "MLflow"}


@dataclass(frozen=True)
class Claim:
    run_id: str
    lock_token: str
    job_id: str
    type: str
    options: dict[str, Any]
    external_id: str | None
    cursor: int
    attempts: int


@dataclass(frozen=True)
class Work:
    """What one attempt sends, read in one short session before any call goes out."""

    job: JobModel
    credentials: dict[str, str] | None
    rows: list[MetricModel]
    ended: bool
    """The job has ended and `rows` are its last points."""


@dataclass
class IntegrationWorker:
    sessions: sessionmaker[Session]
    settings: Settings
    clock: Callable[[], float] = time.time
    _box: SecretBox = field(init=False)
    _sinks: dict[str, Sink] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._box = secret_box(self.settings)

    @property
    def claim_seconds(self) -> float:
        """How long a claim holds: past what one attempt can take (a few requests, each bounded)."""
        return 10 * self.settings.integrations_timeout_seconds + 10

    def run_once(self) -> int:
        """Claim what is due and work on it. Returns how many runs were attempted."""
        claims = self.claim(limit=CLAIMS)
        for claim in claims:
            self.attempt(claim)
        return len(claims)

    def claim(self, *, limit: int) -> list[Claim]:
        now = self.clock()
        claims = []
        with self.sessions() as session:
            due = session.execute(
                select(IntegrationRunModel)
                .where(
                    col(IntegrationRunModel.status) == "active",
                    col(IntegrationRunModel.next_attempt_at) <= now,
                )
                .order_by(col(IntegrationRunModel.next_attempt_at), col(IntegrationRunModel.id))
                .limit(limit)
            ).scalars()
            for row in list(due):
                token = new_lock_token()
                taken = session.execute(
                    guarded_update(IntegrationRunModel, row.id, row.lock_token).values(
                        lock_token=token, next_attempt_at=now + self.claim_seconds
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claims.append(
                        Claim(
                            run_id=row.id,
                            lock_token=token,
                            job_id=row.job_id,
                            type=row.type,
                            options=row.options,
                            external_id=row.external_id,
                            cursor=row.metric_cursor,
                            attempts=row.attempts,
                        )
                    )
            session.commit()
        return claims

    def attempt(self, claim: Claim) -> None:
        """One attempt for one run; never raises (a bug becomes a failed attempt, retried)."""
        try:
            work = self._load(claim)
            external_id, cursor, finished = self._send(claim, work)
        except (IntegrationFailed, SecretUnreadable) as exc:
            self._failed(claim, str(exc))
        except Exception as exc:
            log.exception("integration run %s failed", claim.run_id)
            self._failed(claim, f"an internal error stopped the attempt ({type(exc).__name__})")
        else:
            self._succeeded(claim, external_id=external_id, cursor=cursor, finished=finished)

    def _load(self, claim: Claim) -> Work:
        with self.sessions() as session:
            job = session.get(JobModel, claim.job_id)
            if job is None:
                raise IntegrationFailed("the job is gone")
            # Read the status before the metrics: points reported before the job ended are all visible.
            ended = job.status.is_terminal
            rows = list(
                session.execute(
                    select(MetricModel)
                    .where(col(MetricModel.job_id) == claim.job_id, col(MetricModel.id) > claim.cursor)
                    .order_by(col(MetricModel.id))
                    .limit(BATCH)
                ).scalars()
            )
            credentials = open_credentials(session, job.project_id, claim.type, self._box)
            session.expunge_all()
        return Work(job=job, credentials=credentials, rows=rows, ended=ended and len(rows) < BATCH)

    def _send(self, claim: Claim, work: Work) -> tuple[str, int, bool]:
        """Open, log, finish as due; (external id, new cursor, finished). No session is open here."""
        sink = self._sinks.get(claim.run_id)
        external_id = claim.external_id
        if sink is None:
            sink = self._build(claim, work)
            external_id = sink.open(
                RunInfo(
                    job_id=work.job.id,
                    external_id=claim.external_id,
                    options=claim.options[claim.type],
                    params=content.job_params(work.job),
                    tags=content.job_tags(work.job),
                    created_at=work.job.created_at,
                )
            )
            self._sinks[claim.run_id] = sink
            if external_id != claim.external_id:  # kept now, so a retry attaches to this run, not a new one
                self._write(claim, {"external_id": external_id})
        cursor = claim.cursor
        if work.rows:
            sink.log(content.points(work.rows))
            cursor = work.rows[-1].id or cursor
        if work.ended:
            sink.finish(
                Outcome(work.job.status, content.links(work.job, self.settings.resolved_public_url()))
            )
            self._sinks.pop(claim.run_id).close()
        return str(external_id), cursor, work.ended

    def _build(self, claim: Claim, work: Work) -> Sink:
        name = NAMES.get(claim.type, claim.type)
        if work.credentials is None and (claim.type == "mlflow" or self.settings.wandb_mode == "online"):
            raise IntegrationFailed(
                f"the project's {name} credentials were removed; "
                f"set them with PUT /v1/integrations/{claim.type}"
            )
        timeout = self.settings.integrations_timeout_seconds
        if claim.type == "mlflow":
            assert work.credentials is not None
            try:
                check_tracking_uri(work.credentials["tracking_uri"], self.settings)
            except InvalidRequest as exc:
                raise IntegrationFailed(exc.message) from None
            return MlflowSink(credentials=work.credentials, timeout=timeout)
        return WandbSink(
            credentials=work.credentials,
            mode=self.settings.wandb_mode,
            base_url=self.settings.wandb_base_url,
            directory=self.settings.resolved_data_dir(),  # wandb writes into its wandb/ folder
            timeout=timeout,
        )

    def _succeeded(self, claim: Claim, *, external_id: str, cursor: int, finished: bool) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "external_id": external_id,
            "metric_cursor": cursor,
            "attempts": 0,
            "last_error": None,
            "lock_token": new_lock_token(),
            "updated_at": int(now),
            "next_attempt_at": None if finished else now + self.settings.integrations_poll_seconds,
        }
        if finished:
            values["status"] = "finished"
        self._write(claim, values)

    def _failed(self, claim: Claim, error: str) -> None:
        sink = self._sinks.pop(claim.run_id, None)
        if sink is not None:
            sink.close()  # the next attempt opens (attaches to) the run again
        now = self.clock()
        attempts = claim.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_error": error,
            "lock_token": new_lock_token(),
            "updated_at": int(now),
        }
        gave_up = attempts >= self.settings.integrations_max_attempts
        if gave_up:
            values |= {"status": "failed", "next_attempt_at": None}
        else:
            wait = backoff_seconds(
                attempts,
                base=self.settings.integrations_backoff_seconds,
                cap=self.settings.integrations_backoff_max_seconds,
            )
            values["next_attempt_at"] = now + wait
        if self._write(claim, values) and gave_up:
            name = NAMES.get(claim.type, claim.type)
            with self.sessions() as session:
                record_event(
                    session,
                    claim.job_id,
                    f"The {name} integration stopped after {attempts} failed attempts: {error}. "
                    "The job is not affected.",
                    level="warn",
                    data={"integration": claim.type, "error": error},
                )

    def _write(self, claim: Claim, values: dict[str, Any]) -> bool:
        """Apply an attempt's result if our claim still holds; whether it did."""
        with self.sessions() as session:
            moved = session.execute(
                guarded_update(IntegrationRunModel, claim.run_id, claim.lock_token).values(**values)
            )
            session.commit()
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set: passes back to back while there is work, else one per poll interval."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # the database may be away for a moment; the loop must outlive that
                log.exception("integrations pass failed")
                busy = 0
            if not busy:
                stop.wait(self.settings.integrations_poll_seconds)


def start_worker(
    sessions: sessionmaker[Session], settings: Settings, stop: threading.Event
) -> threading.Thread:
    worker = IntegrationWorker(sessions, settings)
    thread = threading.Thread(target=worker.run, args=(stop,), name="alignd-integrations", daemon=True)
    thread.start()
    return thread
