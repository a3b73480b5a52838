"""Failed-authentication rate limiting per client address, so API keys and job tokens cannot be guessed
at the speed of the network.

`FailedAuthGuard` (ASGI middleware, outside routing and the job-status fast path) watches answers to
requests that carry an `Authorization` header: each 401 counts as a failure of the client's address.
Once an address has `ALIGND_AUTH_FAILURE_LIMIT` failures within `ALIGND_AUTH_FAILURE_WINDOW_SECONDS`,
its requests with credentials get 429 and `Retry-After` until the oldest of them leaves the window;
requests without credentials (health checks, signed store URLs) and other addresses are unaffected.

Counts are kept in the server process (one per worker with `alignd serve --workers N`, and per
replica), so an address may make up to that many times the limit before every process refuses it. The
address is the one the server sees: behind a reverse proxy, let uvicorn take the client's from
`X-Forwarded-For` (`FORWARDED_ALLOW_IPS`), or every client shares the proxy's count.
"""

import math
import time
from collections import deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alignd.api.errors import envelope

MAX_ADDRESSES = 100_000
"""Addresses tracked at once; past this, those whose failures have all expired are forgotten first."""


class FailedAuthLimiter:
    """A sliding window of failure times per address. Used from the event loop only, so unlocked."""

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may try again; None when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = self._clock()
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        if len(failures) < self.limit:
            return None
        return failures[0] + self.window_seconds - now

    def record_failure(self, address: str) -> None:
        failures = self._failures.get(address)
        if failures is None:
            if len(self._failures) >= self.max_addresses:
                self._forget_expired()
            failures = self._failures[address] = deque(maxlen=self.limit)
        failures.append(self._clock())

    def _forget_expired(self) -> None:
        horizon = self._clock() - self.window_seconds
        for address in [address for address, times in self._failures.items() if times[-1] <= horizon]:
            del self._failures[address]
        if len(self._failures) >= self.max_addresses:
            self._failures.clear()  # that many live attackers: start their counts again rather than grow


class FailedAuthGuard:
    def __init__(self, app: ASGIApp, *, limit: int, window_seconds: float) -> None:
        self.app = app
        self.limiter = FailedAuthLimiter(limit, window_seconds) if limit > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        if limiter is None or scope["type"] != "http" or not _has_credentials(scope):
            await self.app(scope, receive, send)
            return
        address = scope["client"][0] if scope.get("client") else ""
        wait = limiter.retry_after(address)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            response = envelope(
                429,
                f"too many failed authentication attempts from this address; try again in {seconds} s "
                "with a valid API key",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(seconds)},
            )
            await response(scope, receive, send)
            return

        async def send_watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                limiter.record_failure(address)
            await send(message)

        await self.app(scope, receive, send_watched)


def _has_credentials(scope: Scope) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])
