"""alignd/webhooks/signing.py: Standard Webhooks signatures, checked against the spec's published vector."""

import base64

import pytest

from alignd.webhooks.signing import SignatureError, generate_secret, sign, signature_headers, verify

# The test vector the Standard Webhooks reference libraries share.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_reproduces_the_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_vector_and_any_one_of_several_signatures() -> None:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP)}
    verify(
        VECTOR_SECRET, headers | {"webhook-signature": VECTOR_SIGNATURE}, VECTOR_BODY, now=VECTOR_TIMESTAMP
    )
    rotating = f"v1,bm90IHRoaXMgb25l {VECTOR_SIGNATURE}"  # an old secret's signature first
    verify(VECTOR_SECRET, headers | {"webhook-signature": rotating}, VECTOR_BODY, now=VECTOR_TIMESTAMP + 299)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": b'{"test": 2432232315}'}, "no signature"),
        ({"webhook-id": "msg_other"}, "no signature"),
        ({"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}, "no signature"),
        ({"now": VECTOR_TIMESTAMP + 301}, "more than 300s"),
        ({"now": VECTOR_TIMESTAMP - 301}, "more than 300s"),
        ({"webhook-timestamp": "yesterday"}, "not unix seconds"),
        ({"webhook-signature": None}, "missing header webhook-signature"),
        ({"secret": "whsec_" + base64.b64encode(b"another key").decode()}, "no signature"),
    ],
)
def test_verify_refuses_anything_changed(change: dict[str, object], message: str) -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if name in change:
            value = change[name]
            if value is None:
                del headers[name]
            else:
                headers[name] = str(value)
    body = change.get("body", VECTOR_BODY)
    secret = change.get("secret", VECTOR_SECRET)
    now = change.get("now", VECTOR_TIMESTAMP)
    assert isinstance(body, bytes) and isinstance(secret, str) and isinstance(now, int)
    with pytest.raises(SignatureError, match=message):
        verify(secret, headers, body, now=now)


def test_secrets_are_random_32_byte_keys_and_sign_what_verify_accepts() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert first.startswith("whsec_") and len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    headers = signature_headers(first, "evt_1", 1_750_000_000, b"{}")
    verify(first, headers, b"{}", now=1_750_000_000)
    with pytest.raises(SignatureError):
        verify(second, headers, b"{}", now=1_750_000_000)


def test_a_secret_that_is_not_base64_is_refused_in_words() -> None:
    with pytest.raises(SignatureError, match="base64"):
        sign("whsec_not base64!", "evt_1", 1, b"{}")
