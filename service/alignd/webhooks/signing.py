"""Standard Webhooks signatures (https://www.standardwebhooks.com), pure functions.

Every request carries three headers:

    webhook-id:        the event id (the same on every retry, so receivers can drop duplicates)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>"

The key is the secret's base64 part: a secret reads `whsec_<base64 of 32 random bytes>`. A signature
header may hold several space-separated signatures (during a secret rotation); one match is enough.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_TOLERANCE_SECONDS = 300
"""How far a timestamp may be from the receiver's clock: older requests may be replays."""


class SignatureError(ValueError):
    """A webhook request failed verification; the message says which check."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise SignatureError(f"a webhook secret is '{SECRET_PREFIX}' followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one request: "v1,<base64 HMAC-SHA256>"."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless `headers` (lower-case names) carry a valid, recent signature of `body`.

    What a receiver runs; alignd uses it in its own tests and documents it in the README.
    """
    try:
        msg_id = headers["webhook-id"]
        timestamp_text = headers["webhook-timestamp"]
        signatures = headers["webhook-signature"]
    except KeyError as missing:
        raise SignatureError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise SignatureError("webhook-timestamp is not unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_seconds}s from now")
    expected = sign(secret, msg_id, timestamp, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return
    raise SignatureError("no signature in webhook-signature matches the body")
