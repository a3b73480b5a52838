"""The dispatcher: claims due webhook deliveries, posts them signed, and retries with backoff.

One pass (`run_once`): claim up to `webhook_concurrency` due rows, each with a compare-and-set on its
lock token that also pushes `next_attempt_at` past the attempt's timeout (a visibility timeout); send
them in parallel with no transaction open; write each result back only if the row still carries our
token. Two dispatchers (two replicas, or a server and `alignd controller`) therefore never send the same
attempt, and a dispatcher that dies mid-send leaves rows that become due again when the claim expires.
Delivery is at least once: receivers drop duplicates by `webhook-id`.

A 2xx answer delivers; anything else (another status, a timeout, a refused connection) is retried after
`webhook_backoff_seconds * 2**(attempt - 1)` (at most `webhook_backoff_max_seconds`) until
`webhook_max_attempts`, then the delivery is failed with the last error kept.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col

from alignd import __version__
from alignd.config import Settings
from alignd.models import WebhookAttemptModel, WebhookDeliveryModel, WebhookEndpointModel, new_lock_token
from alignd.webhooks.signing import signature_headers

log = logging.getLogger("alignd.webhooks")
ERROR_BODY_CHARS = 200
"""How much of a failing receiver's answer is kept in the delivery's error."""


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """The wait after failed attempt number `attempt` (1-based): base, 2*base, 4*base, ... at most cap."""
    return float(min(cap, base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Claim:
    """A delivery this dispatcher holds until it writes the result (or the claim expires)."""

    delivery_id: str
    lock_token: str
    attempt: int
    event_id: str
    event_type: str
    payload: str
    url: str
    secret: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class Dispatcher:
    sessions: sessionmaker[Session]
    settings: Settings
    clock: Callable[[], float] = time.time
    deliveries: Counter | None = None
    """Prometheus counter labelled (event_type, outcome): delivered, retrying, failed."""
    _client: httpx.Client = field(init=False)
    _pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            timeout=self.settings.webhook_timeout_seconds,
            follow_redirects=False,
            headers={"User-Agent": f"alignd-webhooks/{__version__}"},
        )
        self._pool = ThreadPoolExecutor(
            self.settings.webhook_concurrency, thread_name_prefix="alignd-webhook"
        )

    @property
    def claim_seconds(self) -> float:
        """How long a claim holds: well past the time one attempt can take (connect, write, read)."""
        return 3 * self.settings.webhook_timeout_seconds + 10

    def run_once(self) -> int:
        """Claim what is due, send it, record the results. Returns how many deliveries were attempted."""
        claims = self.claim(limit=self.settings.webhook_concurrency)
        for claim, outcome in zip(claims, self._pool.map(self.send, claims), strict=True):
            self.record(claim, outcome)
        return len(claims)

    def claim(self, *, limit: int) -> list[Claim]:
        now = self.clock()
        claims = []
        # One order for every dispatcher, so two claiming at once on Postgres queue up, never deadlock.
        with self.sessions() as session:
            due = session.execute(
                select(WebhookDeliveryModel, col(WebhookEndpointModel.url), col(WebhookEndpointModel.secret))
                .join(
                    WebhookEndpointModel,
                    col(WebhookEndpointModel.id) == col(WebhookDeliveryModel.endpoint_id),
                )
                .where(
                    col(WebhookDeliveryModel.status) == "pending",
                    col(WebhookDeliveryModel.next_attempt_at) <= now,
                )
                .order_by(col(WebhookDeliveryModel.next_attempt_at), col(WebhookDeliveryModel.id))
                .limit(limit)
            ).all()
            for row, url, secret in due:
                token = new_lock_token()
                taken = session.execute(
                    update(WebhookDeliveryModel)
                    .where(
                        col(WebhookDeliveryModel.id) == row.id,
                        col(WebhookDeliveryModel.lock_token) == row.lock_token,
                        col(WebhookDeliveryModel.status) == "pending",
                    )
                    .values(lock_token=token, next_attempt_at=now + self.claim_seconds)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    claims.append(
                        Claim(
                            delivery_id=row.id,
                            lock_token=token,
                            attempt=row.attempts + 1,
                            event_id=row.event_id,
                            event_type=row.event_type,
                            payload=row.payload,
                            url=url,
                            secret=secret,
                        )
                    )
            session.commit()
        return claims

    def send(self, claim: Claim) -> Outcome:
        """One signed POST; never raises. No database session is open here."""
        body = claim.payload.encode()
        headers = signature_headers(claim.secret, claim.event_id, int(self.clock()), body)
        headers["Content-Type"] = "application/json"
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            with self._client.stream("POST", claim.url, content=body, headers=headers) as response:
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"the endpoint answered HTTP {status_code}{_excerpt(response)}"
        except httpx.TimeoutException:
            timeout = self.settings.webhook_timeout_seconds
            error = f"no answer within {timeout:g}s (ALIGND_WEBHOOK_TIMEOUT_SECONDS)"
        except httpx.HTTPError as exc:
            error = f"could not reach the endpoint: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug must not kill the dispatcher; the delivery keeps the reason
            log.exception("sending delivery %s failed", claim.delivery_id)
            error = f"internal error while sending: {type(exc).__name__}"
        return Outcome(status_code, error, int((time.monotonic() - started) * 1000))

    def record(self, claim: Claim, outcome: Outcome) -> None:
        """Write the attempt and the delivery's next state, if our claim still holds."""
        now = self.clock()
        values: dict[str, Any] = {
            "attempts": claim.attempt,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "lock_token": new_lock_token(),
            "updated_at": int(now),
        }
        if outcome.ok:
            result = "delivered"
            values |= {"status": "delivered", "delivered_at": int(now), "next_attempt_at": None}
        elif claim.attempt >= self.settings.webhook_max_attempts:
            result = "failed"
            values |= {"status": "failed", "next_attempt_at": None}
        else:
            result = "retrying"
            wait = backoff_seconds(
                claim.attempt,
                base=self.settings.webhook_backoff_seconds,
                cap=self.settings.webhook_backoff_max_seconds,
            )
            values["next_attempt_at"] = now + wait
        with self.sessions() as session:
            moved = session.execute(
                update(WebhookDeliveryModel)
                .where(
                    col(WebhookDeliveryModel.id) == claim.delivery_id,
                    col(WebhookDeliveryModel.lock_token) == claim.lock_token,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                # The endpoint was deleted, or our claim expired and another dispatcher took the row.
                session.rollback()
                log.info("dropping the result of delivery %s: the row moved on", claim.delivery_id)
                return
            session.add(
                WebhookAttemptModel(
                    delivery_id=claim.delivery_id,
                    attempt=claim.attempt,
                    created_at=int(now),
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                )
            )
            session.commit()
        if self.deliveries is not None:
            self.deliveries.labels(claim.event_type, result).inc()
        if result == "failed":
            log.warning(
                "gave up on delivery %s after %d attempts: %s",
                claim.delivery_id,
                claim.attempt,
                outcome.error,
            )

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: work while there is work, otherwise look again every `webhook_poll_seconds`."""
        try:
            while not stop.is_set():
                try:
                    busy = self.run_once() > 0
                except Exception:
                    log.exception("webhook dispatch pass failed; retrying")
                    busy = False
                if not busy:
                    stop.wait(self.settings.webhook_poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


def _excerpt(response: httpx.Response) -> str:
    """The start of a failing answer's body (read no further), for the delivery's error."""
    chunk = b""
    for block in response.iter_bytes():
        chunk += block
        if len(chunk) >= ERROR_BODY_CHARS:
            break
    text = chunk[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def start_dispatcher(
    sessions: sessionmaker[Session], settings: Settings, stop: threading.Event, deliveries: Counter | None
) -> threading.Thread:
    """Run a dispatcher in a daemon thread until `stop` is set."""
    dispatcher = Dispatcher(sessions=sessions, settings=settings, deliveries=deliveries)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="alignd-webhooks", daemon=True)
    thread.start()
    return thread
