"""alignd/webhooks/dispatcher.py and outbox.py: deliveries written with the status change, sent signed to a
real receiver, retried with backoff on a hand-moved clock, given up with the error kept, never sent twice by
two dispatchers. On SQLite and Postgres."""

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.controller import Controller
from alignd.jobs.state import JobStatus, transition
from alignd.launchers import LocalLauncher
from alignd.models import JobModel, ProjectModel, WebhookAttemptModel, WebhookDeliveryModel
from alignd.secretbox import generate_key
from alignd.storage.local import LocalStore
from alignd.storage.signing import UrlSigner
from alignd.webhooks import service
from alignd.webhooks.dispatcher import Dispatcher, backoff_seconds
from tests.db.factories import make_job, make_project

from .conftest import RECEIVER_HOSTS, Clock, Receiver


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "webhook_timeout_seconds": 5.0,
        "webhook_backoff_seconds": 10.0,
        "webhook_backoff_max_seconds": 3600.0,
        "webhook_max_attempts": 5,
        "webhook_allowed_hosts": RECEIVER_HOSTS,
    }
    return Settings(**(values | overrides))


@pytest.fixture
def dispatchers(
    sessions: sessionmaker[Session], clock: Clock, tmp_path: Path
) -> Iterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(**overrides: Any) -> Dispatcher:
        made.append(Dispatcher(sessions=sessions, settings=_settings(tmp_path, **overrides), clock=clock))
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """What endpoints are registered with: the dispatchers' data dir (so their sealing key) and allow-list."""
    return _settings(tmp_path)


def _endpoint(
    sessions: sessionmaker[Session], settings: Settings, receiver: Receiver, events: list[str] | None = None
) -> tuple[ProjectModel, str]:
    with sessions() as session:
        project = make_project(session)
        endpoint, secret = service.create_endpoint(
            session=session, project=project, url=receiver.url, events=events, settings=settings
        )
    receiver.secret = secret
    return project, endpoint.id


def _finish(sessions: sessionmaker[Session], project: ProjectModel, to: JobStatus) -> str:
    with sessions() as session:
        job = make_job(session, project, status=JobStatus.running)
        assert transition(session, job.id, to=to, event=f"test: {to}") is not None
    return job.id


def _deliveries(sessions: sessionmaker[Session], endpoint_id: str) -> list[WebhookDeliveryModel]:
    with sessions() as session:
        return list(
            session.exec(
                select(WebhookDeliveryModel)
                .where(WebhookDeliveryModel.endpoint_id == endpoint_id)
                .order_by(col(WebhookDeliveryModel.created_at_us))
            )
        )


def _attempts(sessions: sessionmaker[Session], delivery_id: str) -> list[tuple[int, int | None, str | None]]:
    with sessions() as session:
        rows = session.exec(
            select(WebhookAttemptModel)
            .where(WebhookAttemptModel.delivery_id == delivery_id)
            .order_by(col(WebhookAttemptModel.attempt))
        )
        return [(a.attempt, a.status_code, a.error) for a in rows]


def test_a_finished_job_is_delivered_once_signed_in_openais_event_shape(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    clock: Clock,
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    job_id = _finish(sessions, project, JobStatus.succeeded)
    dispatcher = dispatchers()

    assert dispatcher.run_once() == 1
    [request] = receiver.wait_for(1)
    assert request.signature_ok
    [delivery] = _deliveries(sessions, endpoint_id)
    assert request.headers["webhook-id"] == delivery.event_id
    assert request.headers["webhook-timestamp"] == str(int(clock.now))
    assert request.headers["content-type"] == "application/json"
    assert request.event == {
        "id": delivery.event_id,
        "object": "event",
        "type": "fine_tuning.job.succeeded",
        "created_at": delivery.created_at,
        "data": {"id": job_id},
    }
    assert delivery.event_id.startswith("evt_")
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered",
        1,
        200,
        None,
    )
    assert delivery.delivered_at == int(clock.now) and delivery.next_attempt_at is None
    assert _attempts(sessions, delivery.id) == [(1, 200, None)]

    clock.advance(3600)
    assert dispatcher.run_once() == 0
    assert len(receiver.received) == 1


def test_a_receiver_that_fails_twice_gets_retries_with_backoff_and_the_same_event(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    clock: Clock,
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    _finish(sessions, project, JobStatus.failed)
    receiver.answers = [500, 503]
    dispatcher = dispatchers()
    first_try = clock.now

    assert dispatcher.run_once() == 1
    [delivery] = _deliveries(sessions, endpoint_id)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 1, first_try + 10)
    assert delivery.last_error == "http_500: the endpoint answered HTTP 500"

    clock.advance(9.9)
    assert dispatcher.run_once() == 0  # not due yet
    clock.advance(0.1)
    assert dispatcher.run_once() == 1
    [delivery] = _deliveries(sessions, endpoint_id)
    assert (delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (
        2,
        503,
        clock.now + 20,
    )

    clock.advance(20)
    assert dispatcher.run_once() == 1
    requests = receiver.wait_for(3)
    assert all(r.signature_ok for r in requests)
    assert {r.headers["webhook-id"] for r in requests} == {delivery.event_id}
    assert len({r.headers["webhook-timestamp"] for r in requests}) == 3  # signed afresh each attempt
    assert len({r.body for r in requests}) == 1
    [delivery] = _deliveries(sessions, endpoint_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert _attempts(sessions, delivery.id) == [
        (1, 500, "http_500: the endpoint answered HTTP 500"),
        (2, 503, "http_503: the endpoint answered HTTP 503"),
        (3, 200, None),
    ]


def test_a_receiver_that_always_fails_is_given_up_with_the_last_error_kept(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    clock: Clock,
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    _finish(sessions, project, JobStatus.cancelled)
    receiver.default = 500
    dispatcher = dispatchers(webhook_max_attempts=3, webhook_backoff_seconds=1.0)

    for wait in (0, 1, 2):
        clock.advance(wait)
        assert dispatcher.run_once() == 1
    [delivery] = _deliveries(sessions, endpoint_id)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert delivery.last_error == "http_500: the endpoint answered HTTP 500"
    assert [a[0] for a in _attempts(sessions, delivery.id)] == [1, 2, 3]

    clock.advance(86_400)
    assert dispatcher.run_once() == 0
    assert len(receiver.wait_for(3)) == 3


def test_unreachable_and_slow_endpoints_fail_with_the_reason(
    sessions: sessionmaker[Session],
    settings: Settings,
    receivers: Callable[[], Receiver],
    dispatchers: Callable[..., Dispatcher],
    clock: Clock,
    closed_port: int,
) -> None:
    slow = receivers()
    slow.delay = 1.0
    project, slow_id = _endpoint(sessions, settings, slow)
    with sessions() as session:
        closed, _ = service.create_endpoint(
            session=session,
            project=project,
            url=f"http://127.0.0.1:{closed_port}/hooks",
            events=None,
            settings=settings,
        )
    _finish(sessions, project, JobStatus.succeeded)
    dispatcher = dispatchers(webhook_timeout_seconds=0.2, webhook_max_attempts=1)

    assert dispatcher.run_once() == 2
    [timed_out] = _deliveries(sessions, slow_id)
    assert timed_out.status == "failed" and timed_out.last_status_code is None
    assert timed_out.last_error == "timeout: no answer within 0.2s (ALIGND_WEBHOOK_TIMEOUT_SECONDS)"
    [refused] = _deliveries(sessions, closed.id)
    assert refused.status == "failed" and refused.last_status_code is None
    assert refused.last_error == "connect_error: could not connect to the endpoint"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n, base=10, cap=100) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]


def test_the_outbox_commits_with_the_status_change_and_only_for_subscribed_endpoints(
    sessions: sessionmaker[Session], settings: Settings, receivers: Callable[[], Receiver]
) -> None:
    project, all_events = _endpoint(sessions, settings, receivers())
    with sessions() as session:
        only_failed, _ = service.create_endpoint(
            session=session,
            project=project,
            url=receivers().url,
            events=["fine_tuning.job.failed"],
            settings=settings,
        )
    _other_project, other_endpoint = _endpoint(sessions, settings, receivers())

    with sessions() as session:
        job = make_job(session, project, status=JobStatus.queued)
        assert transition(session, job.id, to=JobStatus.running, event="started") is not None
        # A writer that lost the race (stale lock token) changes nothing, so owes no event.
        assert transition(session, job.id, to=JobStatus.failed, event="x", expected_lock="stale") is None
    assert _deliveries(sessions, all_events) == [] and _deliveries(sessions, only_failed.id) == []

    _finish(sessions, project, JobStatus.succeeded)
    failed_job = _finish(sessions, project, JobStatus.failed)
    assert [d.event_type for d in _deliveries(sessions, all_events)] == [
        "fine_tuning.job.succeeded",
        "fine_tuning.job.failed",
    ]
    [failed] = _deliveries(sessions, only_failed.id)
    assert failed.event_type == "fine_tuning.job.failed" and failed.subject_id == failed_job
    # One event, one id, whichever endpoint receives it.
    assert failed.event_id == _deliveries(sessions, all_events)[1].event_id
    assert json.loads(failed.payload)["data"] == {"id": failed_job}
    assert _deliveries(sessions, other_endpoint) == []


def test_two_dispatchers_never_send_the_same_attempt(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    for _ in range(12):
        _finish(sessions, project, JobStatus.succeeded)
    pair = [dispatchers(webhook_concurrency=3), dispatchers(webhook_concurrency=3)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def drain(dispatcher: Dispatcher) -> None:
        try:
            start.wait()
            while dispatcher.run_once():
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(d,)) for d in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    requests = receiver.wait_for(12)
    assert len(receiver.received) == 12
    assert len({r.headers["webhook-id"] for r in requests}) == 12
    deliveries = _deliveries(sessions, endpoint_id)
    assert {(d.status, d.attempts) for d in deliveries} == {("delivered", 1)}
    assert all(len(_attempts(sessions, d.id)) == 1 for d in deliveries)


def test_a_claim_excludes_other_dispatchers_until_it_expires(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
    clock: Clock,
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    _finish(sessions, project, JobStatus.succeeded)
    crashed, survivor = dispatchers(), dispatchers()

    [claim] = crashed.claim(limit=10)
    assert survivor.claim(limit=10) == []
    # The first dispatcher dies before recording anything; once its claim lapses the row is due again.
    clock.advance(crashed.claim_seconds + 1)
    assert survivor.run_once() == 1
    late = crashed.send(claim)
    crashed.record(claim, late)  # too late: the row moved on, so this result is dropped
    [delivery] = _deliveries(sessions, endpoint_id)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(_attempts(sessions, delivery.id)) == 1


def test_deleting_an_endpoint_mid_send_drops_the_result(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    _finish(sessions, project, JobStatus.succeeded)
    dispatcher = dispatchers()
    [claim] = dispatcher.claim(limit=10)
    with sessions() as session:
        service.delete_endpoint(session=session, project=project, endpoint_id=endpoint_id)
    dispatcher.record(claim, dispatcher.send(claim))
    assert _deliveries(sessions, endpoint_id) == []


def test_controller_transitions_emit_one_event_each(
    sessions: sessionmaker[Session], settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    """The controller's own terminal moves (a run that succeeded, one that failed) go through the outbox;
    syncing again changes nothing."""
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    launcher = LocalLauncher(tmp_path / "runs")
    controller = Controller(
        sessions=sessions,
        launcher=launcher,
        store=LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://x"),
        settings=Settings(data_dir=tmp_path),
    )
    spec = {"model": "/models/tiny", "training_file": "file-test"}
    gone_pid = "999999999"
    with sessions() as session:
        succeeded = make_job(session, project, status=JobStatus.running, launcher_ref=gone_pid, spec=spec)
        failed = make_job(
            session, project, status=JobStatus.running, launcher_ref=gone_pid, spec=spec, retries=99
        )
    run_dir = launcher.run_dir(succeeded.id)
    run_dir.mkdir(parents=True)
    (run_dir / "termination.json").write_text(
        json.dumps({"exit_code": 0, "reason": "Completed", "message": ""})
    )

    controller.sync_active()
    controller.sync_active()

    with sessions() as session:
        statuses = {
            j.id: j.status
            for j in session.exec(select(JobModel).where(col(JobModel.id).in_([succeeded.id, failed.id])))
        }
    assert statuses == {succeeded.id: "succeeded", failed.id: "failed"}
    events = sorted((d.subject_id, d.event_type) for d in _deliveries(sessions, endpoint_id))
    assert events == sorted(
        [(succeeded.id, "fine_tuning.job.succeeded"), (failed.id, "fine_tuning.job.failed")]
    )


def test_a_secret_sealed_under_another_key_fails_the_attempt_with_the_reason(
    sessions: sessionmaker[Session],
    settings: Settings,
    receiver: Receiver,
    dispatchers: Callable[..., Dispatcher],
) -> None:
    """A replica started with another ALIGND_ENCRYPTION_KEY than the one that sealed the secret sends
    nothing unsigned: the attempt fails and says which setting to check."""
    project, endpoint_id = _endpoint(sessions, settings, receiver)
    _finish(sessions, project, JobStatus.succeeded)
    dispatcher = dispatchers(encryption_key=generate_key(), webhook_max_attempts=1)

    assert dispatcher.run_once() == 1
    [delivery] = _deliveries(sessions, endpoint_id)
    assert delivery.status == "failed" and delivery.last_error is not None
    assert (
        delivery.last_error.startswith("secret_unreadable: ")
        and "ALIGND_ENCRYPTION_KEY" in delivery.last_error
    )
    assert receiver.received == []
