"""Why a delivery attempt failed, as stored and shown: a short class, then a sentence of our own.

`http_503: the endpoint answered HTTP 503`, `timeout: ...`, `forbidden_address: ...`. The receiver's own
words (its body, headers, or bytes quoted in a protocol error) are never kept: a URL that points inside
the network must not become a way to read what answers there.
"""

import re

TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
PROTOCOL_ERROR = "protocol_error"
FORBIDDEN_ADDRESS = "forbidden_address"
DNS_ERROR = "dns_error"
SECRET_UNREADABLE = "secret_unreadable"
INTERNAL_ERROR = "internal_error"

_CLASS = re.compile(r"(http_\d{3}|[a-z_]+): ")
_KNOWN = {
    TIMEOUT,
    CONNECT_ERROR,
    PROTOCOL_ERROR,
    FORBIDDEN_ADDRESS,
    DNS_ERROR,
    SECRET_UNREADABLE,
    INTERNAL_ERROR,
}


def failure(error_class: str, sentence: str) -> str:
    return f"{error_class}: {sentence}"


def http_failure(status_code: int) -> str:
    return failure(f"http_{status_code}", f"the endpoint answered HTTP {status_code}")


def public_error(stored: str | None, status_code: int | None) -> str | None:
    """A stored error as the API may show it. Rows written before errors were classed could quote the
    receiver's answer; those are shown as their class alone."""
    if stored is None:
        return None
    match = _CLASS.match(stored)
    if match and (match.group(1).startswith("http_") or match.group(1) in _KNOWN):
        return stored
    if status_code is not None:
        return f"http_{status_code}"
    return "delivery_error"
