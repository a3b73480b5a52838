"""One retry policy for every HTTP call the trainer makes to the control plane and its presigned URLs.

A control-plane restart or a moment of overload must not cost a job one of its few retries, so a call
that fails in a way that may pass (a connection error, a timeout, 429, 5xx) is repeated: after the
server's `Retry-After` when it sends one, else after an exponential backoff with jitter, for a bounded
number of retries and a bounded total time. Any other answer, a success or a 4xx, goes back to the
caller at once: a refused token or a bad request does not get better by asking again.
"""

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from alignd_trainer.errors import InfrastructureError

log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    """How long a failing call is repeated. Mutable only so that a reporter being closed with a timeout
    can shorten the budget of the call in flight; callers that change it own their copy."""

    max_retries: int = 10
    """Retries after the first attempt."""
    give_up_after: float = 300.0
    """Seconds from the first attempt past which no further wait starts."""
    backoff_base: float = 0.5
    """Seconds; the n-th retry waits between half and all of base * 2**n, capped by backoff_max."""
    backoff_max: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": at least half the step, so retries never bunch."""
        step = min(self.backoff_max, self.backoff_base * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)


def default_policy() -> RetryPolicy:
    return RetryPolicy()


def is_retriable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def send_with_retries(
    send: Callable[[], httpx.Response],
    *,
    what: str,
    policy: RetryPolicy,
    pause: Callable[[float], object] = time.sleep,
) -> httpx.Response:
    """Call `send` until it gets an answer that is not 429 or 5xx, and return that answer (a success or
    a 4xx for the caller to judge). Transport errors (connection refused or reset, timeouts) are retried
    too. Raises InfrastructureError naming `what` and the last error when the policy's retries or time
    run out. `pause(seconds)` waits between attempts (a reporter wakes early when it is being closed)."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            response = send()
        except httpx.TransportError as exc:
            reason, retry_after = f"{type(exc).__name__}: {exc}", None
        except httpx.HTTPError as exc:  # too many redirects, an undecodable body: asking again won't help
            raise InfrastructureError(f"{what} failed: {type(exc).__name__}: {exc}") from None
        else:
            if not is_retriable(response):
                return response
            reason = f"HTTP {response.status_code}"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        delay = retry_after if retry_after is not None else policy.backoff(attempt)
        elapsed = time.monotonic() - started
        if attempt >= policy.max_retries or elapsed + delay > policy.give_up_after:
            raise InfrastructureError(
                f"{what}: gave up after {attempt + 1} attempts in {elapsed:.1f}s; last error: {reason}"
            )
        log.warning("%s failed (%s); retrying in %.2fs", what, reason, delay)
        pause(delay)
        attempt += 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
