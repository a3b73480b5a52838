"""The dispatcher: claims due webhook deliveries, posts them signed, and retries with backoff.

One pass (`run_once`): claim up to `webhook_concurrency` due rows, each with a compare-and-set on its
lock token that also pushes `next_attempt_at` past the attempt's timeout (a visibility timeout); send
them in parallel with no transaction open; write each result back only if the row still carries our
token. Two dispatchers (two replicas, or a server and `alignd controller`) therefore never send the same
attempt, and a dispatcher that dies mid-send leaves rows that become due again when the claim expires.
Delivery is at least once: receivers drop duplicates by `webhook-id`.

Each attempt resolves the URL's host again and connects to the address it checked (`targets`), so a
name re-pointed at an internal address is refused then, and redirects are not followed. A 2xx answer
delivers; anything else (another status, a timeout, a refused connection, a forbidden address) is retried
after `webhook_backoff_seconds * 2**(attempt - 1)` (at most `webhook_backoff_max_seconds`) until
`webhook_max_attempts`, then the delivery is failed with the last error kept: its class and our own
sentence (`failures`), never the receiver's body.

Secrets are stored sealed (`alignd.secretbox`); a dispatcher starting up seals any written before that.
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
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col

from alignd import __version__
from alignd.config import Settings
from alignd.db import guarded_update
from alignd.models import WebhookAttemptModel, WebhookDeliveryModel, WebhookEndpointModel, new_lock_token
from alignd.secretbox import SecretBox, SecretUnreadable, secret_box
from alignd.webhooks import failures
from alignd.webhooks.service import seal_plaintext_secrets
from alignd.webhooks.signing import signature_headers
from alignd.webhooks.targets import ForbiddenTarget, TargetPolicy, UnresolvedTarget

log = logging.getLogger("alignd.webhooks")


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
    """As stored: sealed, or plaintext in a row written before sealing."""


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
    _targets: TargetPolicy = field(init=False)
    _box: SecretBox = field(init=False)

    def __post_init__(self) -> None:
        self._targets = TargetPolicy.from_settings(self.settings)
        self._box = secret_box(self.settings)
        # Every request goes straight to the address its host was checked to resolve to: no proxy from
        # the environment (an explicit transport leaves HTTP(S)_PROXY out; SSL_CERT_FILE still counts),
        # and no keep-alive, as a pooled connection is keyed by address and carries one TLS server name.
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
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
                    guarded_update(
                        WebhookDeliveryModel,
                        row.id,
                        row.lock_token,
                        col(WebhookDeliveryModel.status) == "pending",
                    ).values(lock_token=token, next_attempt_at=now + self.claim_seconds)
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
        """One signed POST to the checked address; never raises. No database session is open here."""
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = self._post(claim)
            if not 200 <= status_code < 300:
                error = failures.http_failure(status_code)
        except ForbiddenTarget as exc:
            error = failures.failure(failures.FORBIDDEN_ADDRESS, str(exc))
        except UnresolvedTarget as exc:
            error = failures.failure(failures.DNS_ERROR, str(exc))
        except SecretUnreadable as exc:
            error = failures.failure(failures.SECRET_UNREADABLE, str(exc))
        except httpx.TimeoutException:
            timeout = self.settings.webhook_timeout_seconds
            error = failures.failure(
                failures.TIMEOUT, f"no answer within {timeout:g}s (ALIGND_WEBHOOK_TIMEOUT_SECONDS)"
            )
        except httpx.ConnectError:
            error = failures.failure(failures.CONNECT_ERROR, "could not connect to the endpoint")
        except httpx.HTTPError as exc:  # the message may quote the receiver's bytes: keep only the kind
            error = failures.failure(
                failures.PROTOCOL_ERROR, f"the exchange with the endpoint failed ({type(exc).__name__})"
            )
        except Exception as exc:  # a bug must not kill the dispatcher; the delivery keeps the reason
            log.exception("sending delivery %s failed", claim.delivery_id)
            error = failures.failure(failures.INTERNAL_ERROR, f"{type(exc).__name__} while sending")
        return Outcome(status_code, error, int((time.monotonic() - started) * 1000))

    def _post(self, claim: Claim) -> int:
        """POST to the address the URL's host was just checked to resolve to, naming the host in the
        Host header and the TLS server name; the answer's status (its body is never read)."""
        target = self._targets.resolve(claim.url)
        url = httpx.URL(claim.url)
        body = claim.payload.encode()
        headers = signature_headers(self._box.open(claim.secret), claim.event_id, int(self.clock()), body)
        headers |= {"Content-Type": "application/json", "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        pinned = url.copy_with(host=str(target.address))
        with self._client.stream(
            "POST", pinned, content=body, headers=headers, extensions=extensions
        ) as response:
            return response.status_code

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
                guarded_update(WebhookDeliveryModel, claim.delivery_id, claim.lock_token).values(**values)
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
        """Seal secrets stored in plaintext; then, until `stop`, work while there is work, otherwise look
        again every `webhook_poll_seconds`."""
        try:
            try:
                sealed = seal_plaintext_secrets(sessions=self.sessions, box=self._box)
                if sealed:
                    log.info("sealed %d webhook secrets stored in plaintext", sealed)
            except Exception:  # each attempt opens plaintext secrets as they are; the next start retries
                log.exception("sealing plaintext webhook secrets failed")
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


def start_dispatcher(
    sessions: sessionmaker[Session], settings: Settings, stop: threading.Event, deliveries: Counter | None
) -> threading.Thread:
    """Run a dispatcher in a daemon thread until `stop` is set."""
    dispatcher = Dispatcher(sessions=sessions, settings=settings, deliveries=deliveries)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="alignd-webhooks", daemon=True)
    thread.start()
    return thread
