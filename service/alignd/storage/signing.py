"""Signed URLs for the local store, which the API serves itself (S3 signs its own).

A trainer holds no storage credentials (DESIGN §3): it gets a URL that names one key, one
method and an expiry, with an HMAC-SHA256 over all three, so changing any of them breaks the
signature. Pure functions of their inputs; the clock is a parameter so tests need not sleep.
"""

import hashlib
import hmac
import time

from alignd.errors import Forbidden

METHODS = ("GET", "PUT")


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the URL signing secret must not be empty")
        self._secret = secret

    def sign(self, method: str, key: str, expires: int) -> str:
        """Hex HMAC-SHA256 of method, expiry (unix seconds) and key."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        message = f"{method}\n{int(expires)}\n{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, method: str, key: str, expires: int, signature: str, now: float | None = None) -> None:
        """Raise Forbidden unless signature was made by `sign` for exactly these fields and has not expired.

        The signature is checked first, so "expired" is only ever said of a URL we really issued.
        """
        if method not in METHODS or not self._matches(method, key, expires, signature):
            raise Forbidden("invalid signature: the URL was altered or was not issued by this server")
        if (time.time() if now is None else now) >= expires:
            raise Forbidden("the signed URL has expired; ask the API for a new one")

    def _matches(self, method: str, key: str, expires: int, signature: str) -> bool:
        expected = self.sign(method, key, expires).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
