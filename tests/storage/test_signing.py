"""UrlSigner: the only thing standing between a local store's URLs and anyone who can reach the API.
A fake clock (`now=`) replaces sleeping."""

import pytest

from alignd.errors import Forbidden
from alignd.storage import UrlSigner

KEY = "jobs/j1/checkpoints/step-10/adapter.safetensors"
EXPIRES = 1_800_000_000
NOW = EXPIRES - 60


@pytest.fixture
def signature(signer: UrlSigner) -> str:
    return signer.sign("PUT", KEY, EXPIRES)


def test_signature_is_deterministic_hex(signer: UrlSigner, signature: str) -> None:
    assert signature == signer.sign("PUT", KEY, EXPIRES)
    assert len(signature) == 64 and int(signature, 16) >= 0


def test_a_genuine_url_verifies(signer: UrlSigner, signature: str) -> None:
    signer.verify("PUT", KEY, EXPIRES, signature, now=NOW)


@pytest.mark.parametrize(
    ("method", "key", "expires"),
    [
        ("GET", KEY, EXPIRES),  # a PUT URL used to read
        ("PUT", "jobs/j2/checkpoints/step-10/adapter.safetensors", EXPIRES),  # another job's key
        ("PUT", KEY + "x", EXPIRES),
        ("PUT", KEY, EXPIRES + 3600),  # expiry pushed back
        ("DELETE", KEY, EXPIRES),
    ],
    ids=["method", "key", "key-suffix", "expires", "unknown-method"],
)
def test_any_tampered_field_is_forbidden(
    signer: UrlSigner, signature: str, method: str, key: str, expires: int
) -> None:
    with pytest.raises(Forbidden, match="invalid signature"):
        signer.verify(method, key, expires, signature, now=NOW)


@pytest.mark.parametrize(
    "bad",
    ["", "0" * 64, "ab", "zz" * 32, "é" * 64, "\udcff"],
    ids=["empty", "zeros", "short", "not-hex", "non-ascii", "surrogate"],
)
def test_tampered_signature_is_forbidden(signer: UrlSigner, signature: str, bad: str) -> None:
    with pytest.raises(Forbidden, match="invalid signature"):
        signer.verify("PUT", KEY, EXPIRES, bad, now=NOW)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(Forbidden, match="invalid signature"):
        signer.verify("PUT", KEY, EXPIRES, flipped, now=NOW)


def test_another_servers_secret_is_forbidden(signature: str) -> None:
    with pytest.raises(Forbidden, match="invalid signature"):
        UrlSigner(b"some other secret").verify("PUT", KEY, EXPIRES, signature, now=NOW)


def test_expiry_is_exclusive(signer: UrlSigner, signature: str) -> None:
    signer.verify("PUT", KEY, EXPIRES, signature, now=EXPIRES - 0.001)
    for now in (EXPIRES, EXPIRES + 1, EXPIRES + 86400):
        with pytest.raises(Forbidden, match="expired"):
            signer.verify("PUT", KEY, EXPIRES, signature, now=now)


def test_an_expired_forgery_says_invalid_not_expired(signer: UrlSigner) -> None:
    """'expired' is only said of URLs we issued: it tells a holder to ask again, not that it was close."""
    with pytest.raises(Forbidden, match="invalid signature"):
        signer.verify("PUT", KEY, 1, "0" * 64, now=NOW)


def test_default_clock(signer: UrlSigner) -> None:
    signer.verify("GET", KEY, 4_000_000_000, signer.sign("GET", KEY, 4_000_000_000))
    with pytest.raises(Forbidden, match="expired"):
        signer.verify("GET", KEY, 1, signer.sign("GET", KEY, 1))


def test_secret_and_method_are_checked() -> None:
    with pytest.raises(ValueError, match="secret"):
        UrlSigner(b"")
    with pytest.raises(ValueError, match="method"):
        UrlSigner(b"s").sign("POST", KEY, EXPIRES)
