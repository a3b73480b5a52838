"""alignd/jobs/state.py: the transition table, and compare-and-set status changes with their events."""

import threading
from collections.abc import Callable
from itertools import pairwise, product
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlmodel import Session, col

from alignd import db
from alignd.errors import Conflict, NotFound
from alignd.jobs import state
from alignd.jobs.lifecycle import ALLOWED, JobStatus
from alignd.jobs.state import check_transition, record_event, transition
from alignd.models import JobEventModel, JobModel

from .factories import make_job

S = JobStatus
EXPECTED_TABLE = {
    S.validating_files: {S.queued, S.failed, S.cancelled},
    S.queued: {S.running, S.failed, S.cancelled},
    S.running: {S.succeeded, S.failed, S.cancelled, S.pausing, S.queued},
    S.pausing: {S.paused, S.failed, S.cancelled, S.succeeded},
    S.paused: {S.queued, S.cancelled},
    S.succeeded: set(),
    S.failed: set(),
    S.cancelled: set(),
}
PAIRS = list(product(JobStatus, JobStatus))


def _events(session: Session, job_id: str) -> list[JobEventModel]:
    query = select(JobEventModel).where(col(JobEventModel.job_id) == job_id).order_by(col(JobEventModel.seq))
    return list(session.execute(query).scalars())


def test_transition_table_is_the_documented_one() -> None:
    assert {status: set(targets) for status, targets in ALLOWED.items()} == EXPECTED_TABLE
    assert {S.succeeded, S.failed, S.cancelled} == JobStatus.terminal()


@pytest.mark.parametrize(("current", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_check_transition(current: JobStatus, to: JobStatus) -> None:
    if to in EXPECTED_TABLE[current]:
        check_transition(current, to, job_id="ftjob-x")
    else:
        with pytest.raises(Conflict, match=rf"^job ftjob-x is {current}; it cannot be "):
            check_transition(current, to, job_id="ftjob-x")


def test_refusals_read_as_sentences() -> None:
    with pytest.raises(Conflict) as refused:
        check_transition("succeeded", "cancelled", job_id="ftjob-x")
    assert refused.value.message == "job ftjob-x is succeeded; it cannot be cancelled"
    assert refused.value.status_code == 409
    with pytest.raises(Conflict, match=r"^job ftjob-y is queued; it cannot be resumed$"):
        check_transition(S.queued, S.queued, job_id="ftjob-y")
    with pytest.raises(Conflict, match=r"^job ftjob-z is cancelled; it cannot be paused$"):
        check_transition(S.cancelled, S.pausing, job_id="ftjob-z")


def test_every_transition_against_the_database(session: Session) -> None:
    for current, to in PAIRS:
        job = make_job(session, status=current)
        lock = job.lock_token
        if to in EXPECTED_TABLE[current]:
            moved = transition(session, job.id, to=to, event=f"{current} to {to}")
            assert moved is not None, (current, to)
            assert (moved.status, moved.lock_token != lock) == (to, True)
            [status_event] = _events(session, job.id)
            assert (status_event.type, status_event.message, status_event.data) == (
                "status",
                f"{current} to {to}",
                {"status": to, "previous_status": current},
            )
        else:
            with pytest.raises(Conflict):
                transition(session, job.id, to=to, event="refused")
            session.rollback()
            unchanged = session.get(JobModel, job.id, populate_existing=True)
            assert unchanged is not None
            assert (unchanged.status, unchanged.lock_token) == (current, lock), (current, to)
            assert _events(session, job.id) == []


def test_timestamps_follow_the_status(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1000, 2000, 10))
    monkeypatch.setattr(state, "unix_now", lambda: next(clock))
    job = make_job(session)

    first = transition(session, job.id, to=S.running, event="started")
    assert first is not None and (first.started_at, first.finished_at, first.updated_at) == (1000, None, 1000)
    requeued = transition(session, job.id, to=S.queued, event="retrying")
    again = transition(session, job.id, to=S.running, event="started again")
    assert requeued is not None and again is not None
    assert (again.started_at, again.updated_at) == (1000, 1020)  # the first start is kept
    done = transition(session, job.id, to=S.succeeded, event="done")
    assert done is not None and (done.finished_at, done.updated_at) == (1030, 1030)
    assert [e.created_at for e in _events(session, job.id)] == [1000, 1010, 1020, 1030]


def test_fields_are_set_in_the_same_update(session: Session) -> None:
    job = make_job(session, status=S.running)
    error = {"code": "oom", "message": "CUDA out of memory at batch_size 64", "param": None}

    failed = transition(
        session,
        job.id,
        to=S.failed,
        event="out of memory",
        level="error",
        data={"exit_code": 66},
        fields={"error": error},
    )

    assert failed is not None and (failed.status, failed.error) == (S.failed, error)
    [status_event] = _events(session, job.id)
    assert status_event.level == "error"
    assert status_event.data == {"status": "failed", "previous_status": "running", "exit_code": 66}
    with pytest.raises(ValueError, match="transition owns"):
        transition(session, make_job(session).id, to=S.running, event="x", fields={"status": "succeeded"})


def test_a_stale_lock_token_changes_nothing(session: Session) -> None:
    job = make_job(session, status=S.running)
    stale = job.lock_token
    assert transition(session, job.id, to=S.pausing, expected_lock=stale, event="pause requested") is not None

    assert transition(session, job.id, to=S.failed, expected_lock=stale, event="lost the race") is None

    current = session.get(JobModel, job.id, populate_existing=True)
    assert current is not None and current.status == S.pausing
    assert [e.message for e in _events(session, job.id)] == ["pause requested"]


def test_unknown_job(session: Session) -> None:
    with pytest.raises(NotFound, match="job ftjob-nope not found"):
        transition(session, "ftjob-nope", to=S.cancelled, event="x")


def _race(engine: Engine, job_id: str, moves: list[Callable[[Session], Any]]) -> list[Any]:
    """Run `moves` in threads that all read the job before any of them writes: each thread waits at a
    barrier just before its UPDATE, so every transition compares against the same status."""
    barrier = threading.Barrier(len(moves), timeout=30)

    def before_update(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("UPDATE jobs SET status") and job_id in repr(parameters):
            barrier.wait()

    results: list[Any] = [None] * len(moves)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with db.session_factory(engine)() as session:
                results[index] = moves[index](session)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    event.listen(engine, "before_cursor_execute", before_update)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(moves))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        event.remove(engine, "before_cursor_execute", before_update)
    assert not errors, errors
    return results


def test_two_controllers_racing_the_same_transition(engine: Engine, session: Session) -> None:
    job = make_job(session)

    results = _race(engine, job.id, [lambda s: transition(s, job.id, to=S.running, event="started")] * 2)

    assert sorted(result is None for result in results) == [False, True]  # exactly one winner
    assert [e.message for e in _events(session, job.id)] == ["started"]


def test_cancel_racing_completion(engine: Engine, session: Session) -> None:
    job = make_job(session, status=S.running)

    results = _race(
        engine,
        job.id,
        [
            lambda s: transition(s, job.id, to=S.succeeded, event="trainer finished"),
            lambda s: transition(s, job.id, to=S.cancelled, event="cancelled by user"),
        ],
    )

    [winner] = [result for result in results if result is not None]
    final = session.get(JobModel, job.id, populate_existing=True)
    assert final is not None and final.status == winner.status
    assert [e.data["status"] for e in _events(session, job.id) if e.data] == [winner.status]


def test_events_are_ordered_by_seq(session: Session) -> None:
    job = make_job(session, status=S.validating_files)
    record_event(session, job.id, "validating training file", data={"rows": 3})
    transition(session, job.id, to=S.queued, event="files validated")
    record_event(session, job.id, "step 1: loss 0.693", type="metrics", data={"loss": 0.693})
    record_event(session, job.id, "disk almost full", level="warn")

    events = _events(session, job.id)

    assert [e.message for e in events] == [
        "validating training file",
        "files validated",
        "step 1: loss 0.693",
        "disk almost full",
    ]
    seqs = [e.seq for e in events if e.seq is not None]
    assert len(seqs) == 4 and all(a < b for a, b in pairwise(seqs))
    assert all(e.id.startswith("ftevent-") for e in events) and len({e.id for e in events}) == 4
    assert [(e.type, e.level) for e in events] == [
        ("message", "info"),
        ("status", "info"),
        ("metrics", "info"),
        ("message", "warn"),
    ]
    with pytest.raises(ValueError, match="recorded by transition"):
        record_event(session, job.id, "sneaky", type="status")
