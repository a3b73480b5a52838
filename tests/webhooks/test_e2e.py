"""Webhooks through the running app: its own dispatcher thread (started with the controller) delivers to a
real receiver, and the deliveries API shows every attempt, with no word of a receiver's answer. Secrets
are sealed in the database; an endpoint stored in plaintext before sealing still signs, and is sealed
when a dispatcher starts. A cancel through the API is the event. On SQLite and Postgres."""

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from alignd.secretbox import SEALED_PREFIX
from alignd.webhooks.signing import generate_secret
from tests.api.helpers import bearer

from .conftest import LiveApps, Receiver, cancelled_job, new_project, register, settled_delivery


def _stored_secret(db_url: str, endpoint_id: str) -> str:
    """The secret column as the database holds it, read with plain SQL."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            value: str = connection.execute(
                text("SELECT secret FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
            ).scalar_one()
    finally:
        engine.dispose()
    return value


def test_a_cancel_is_delivered_signed_and_the_attempt_is_listed(
    live_apps: LiveApps, tmp_path: Path, receiver: Receiver
) -> None:
    live = live_apps.start()
    key = new_project(live, tmp_path)
    endpoint_id = register(live, key, receiver.url, receiver)
    job_id = cancelled_job(live, key)

    [request] = receiver.wait_for(1)
    assert request.signature_ok
    assert request.event["type"] == "fine_tuning.job.cancelled"
    assert request.event["data"] == {"id": job_id}

    delivery = settled_delivery(live, key, endpoint_id)
    assert delivery["object"] == "webhook_endpoint.delivery"
    assert delivery["event_id"] == request.headers["webhook-id"] == request.event["id"]
    assert (delivery["event_type"], delivery["data"], delivery["webhook_id"]) == (
        "fine_tuning.job.cancelled",
        {"id": job_id},
        endpoint_id,
    )
    assert (delivery["status"], delivery["attempt_count"], delivery["last_status_code"]) == (
        "delivered",
        1,
        200,
    )
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [(1, 200, None)]
    assert delivery["delivered_at"] is not None and delivery["next_attempt_at"] is None

    scraped = live.get("/metrics").text
    assert (
        'alignd_webhook_deliveries_total{event_type="fine_tuning.job.cancelled",outcome="delivered"} 1.0'
        in scraped
    )


def test_retries_and_giving_up_are_visible_in_the_deliveries_without_the_receivers_answer(
    live_apps: LiveApps, tmp_path: Path, receivers: Callable[[], Receiver]
) -> None:
    """The receivers answer errors with the body "receiver says no": the API keeps the status code and
    the error class, never that text."""
    live = live_apps.start()
    key = new_project(live, tmp_path)
    flaky, broken = receivers(), receivers()
    flaky.answers = [500, 502]
    broken.default = 503
    flaky_id = register(live, key, flaky.url, flaky)
    broken_id = register(live, key, broken.url, broken)
    cancelled_job(live, key)

    delivered = settled_delivery(live, key, flaky_id)
    assert delivered["status"] == "delivered" and delivered["attempt_count"] == 3
    assert [(a["attempt"], a["status_code"]) for a in delivered["attempts"]] == [(1, 500), (2, 502), (3, 200)]
    assert delivered["attempts"][0]["error"] == "http_500: the endpoint answered HTTP 500"
    assert all(r.signature_ok for r in flaky.wait_for(3))

    failed = settled_delivery(live, key, broken_id)
    assert (failed["status"], failed["attempt_count"], failed["last_status_code"]) == ("failed", 3, 503)
    assert failed["last_error"] == "http_503: the endpoint answered HTTP 503"
    assert failed["next_attempt_at"] is None
    assert [a["attempt"] for a in failed["attempts"]] == [1, 2, 3]
    for endpoint_id in (flaky_id, broken_id):
        listed = live.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=bearer(key)).text
        assert "receiver says no" not in listed


@pytest.fixture
def banner_server() -> Iterator[str]:
    """A service on loopback that is not HTTP: it writes a banner with a secret in it and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.sendall(b"SSH-2.0-internal-banner-s3cr3t-token\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_a_service_that_does_not_speak_http_is_a_protocol_error_without_its_banner(
    live_apps: LiveApps, tmp_path: Path, banner_server: str
) -> None:
    live = live_apps.start(webhook_max_attempts=1)
    key = new_project(live, tmp_path)
    endpoint_id = register(live, key, banner_server)
    cancelled_job(live, key)

    failed = settled_delivery(live, key, endpoint_id)
    assert failed["status"] == "failed" and failed["last_status_code"] is None
    assert failed["last_error"].startswith("protocol_error: "), failed
    listed = live.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=bearer(key)).text
    assert "s3cr3t" not in listed and "SSH-2.0" not in listed


def test_the_secret_is_sealed_in_the_database(
    live_apps: LiveApps, tmp_path: Path, receiver: Receiver, db_url: str
) -> None:
    live = live_apps.start()
    key = new_project(live, tmp_path)
    endpoint_id = register(live, key, receiver.url, receiver)
    assert receiver.secret is not None

    stored = _stored_secret(db_url, endpoint_id)
    assert stored.startswith(SEALED_PREFIX)
    assert receiver.secret not in stored and receiver.secret.removeprefix("whsec_") not in stored
    cancelled_job(live, key)
    [request] = receiver.wait_for(1)
    assert request.signature_ok
    assert (tmp_path / "alignd" / "encryption.key").stat().st_mode & 0o777 == 0o600


def test_an_endpoint_stored_in_plaintext_still_signs_and_is_sealed_at_the_next_start(
    live_apps: LiveApps, tmp_path: Path, receiver: Receiver, db_url: str
) -> None:
    """A row written before secrets were sealed (plain `whsec_...` in the column) signs with that secret;
    a restarted server seals it, and it still signs the same."""
    first = live_apps.start()
    key = new_project(first, tmp_path)
    endpoint_id = register(first, key, receiver.url)
    legacy_secret = generate_secret()
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE webhook_endpoints SET secret = :secret WHERE id = :id"),
            {"secret": legacy_secret, "id": endpoint_id},
        )
    engine.dispose()
    receiver.secret = legacy_secret

    cancelled_job(first, key)
    [before] = receiver.wait_for(1)
    assert before.signature_ok
    assert _stored_secret(db_url, endpoint_id) == legacy_secret

    live_apps.stop(first)
    second = live_apps.start()
    cancelled_job(second, key)
    settled_delivery(second, key, endpoint_id, count=2)
    stored = _stored_secret(db_url, endpoint_id)
    assert stored.startswith(SEALED_PREFIX) and legacy_secret not in stored
    [_, after] = receiver.wait_for(2)
    assert after.signature_ok


def test_errors_stored_before_they_were_classed_are_shown_without_the_receivers_words(
    live_apps: LiveApps, tmp_path: Path, receivers: Callable[[], Receiver], db_url: str
) -> None:
    """A row written by an older server kept the start of the receiver's answer; the API shows its class."""
    live = live_apps.start(webhook_max_attempts=1)
    key = new_project(live, tmp_path)
    broken = receivers()
    broken.default = 500
    endpoint_id = register(live, key, broken.url, broken)
    cancelled_job(live, key)
    settled_delivery(live, key, endpoint_id)
    engine = create_engine(db_url)
    with engine.begin() as connection:
        old = "the endpoint answered HTTP 500: internal page text"
        connection.execute(text("UPDATE webhook_deliveries SET last_error = :e"), {"e": old})
        connection.execute(text("UPDATE webhook_attempts SET error = :e"), {"e": old})
    engine.dispose()

    delivery = settled_delivery(live, key, endpoint_id)
    assert delivery["last_error"] == "http_500" and delivery["attempts"][0]["error"] == "http_500"
