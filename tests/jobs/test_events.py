"""alignd/jobs/events.py: per-job event numbers that commit in order, so a follower never skips one.

On Postgres a global autoincrement cannot be a cursor: a writer holding sequence value 10 may commit after
the writer holding 11, and a follower that read 11 first moves past 10 for good. These tests run the
writers concurrently on SQLite and Postgres and read the log the way the SSE follower does."""

import threading
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlmodel import Session

from alignd import db
from alignd.jobs.events import add_events
from alignd.jobs.service import events_after
from alignd.models import JobEventModel
from tests.db.factories import make_job


def _event(job_id: str, message: str) -> JobEventModel:
    return JobEventModel(job_id=job_id, message=message)


def _wait_until_blocked(engine: Engine, writer: threading.Thread) -> None:
    """Until `writer` waits for a lock (Postgres shows it in pg_stat_activity), or has finished.
    SQLite cannot show it: give the writer a moment to reach its lock instead."""
    if engine.dialect.name != "postgresql":
        writer.join(timeout=0.5)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    blocked = threading.Event()
    for _ in range(200):
        with engine.connect() as connection:
            if connection.execute(query).scalar_one() > 0:
                blocked.set()
                return
        if not writer.is_alive():
            return
        blocked.wait(0.05)
    raise AssertionError("the second writer neither finished nor waited for a lock")


def test_an_event_committed_late_is_not_skipped_by_a_follower(engine: Engine, session: Session) -> None:
    """Writer A numbers its event and stays uncommitted; writer B starts; the follower polls; then A
    commits. The follower must get A's event, then B's, in that order."""
    job = make_job(session)
    sessions = db.session_factory(engine)
    seen: list[str] = []

    def follower_poll() -> None:
        with sessions() as reader:
            last = 0 if not seen else _seq_of(reader, job.id, seen[-1])
            seen.extend(e.message for e in events_after(reader, job.id, last))

    errors: list[BaseException] = []

    def writer_b() -> None:
        try:
            with sessions() as b:
                add_events(b, job.id, [_event(job.id, "B")])
                b.commit()
        except BaseException as exc:
            errors.append(exc)

    with sessions() as a:
        add_events(a, job.id, [_event(job.id, "A")])
        a.flush()
        b_thread = threading.Thread(target=writer_b)
        b_thread.start()
        _wait_until_blocked(engine, b_thread)
        follower_poll()
        a.commit()
    b_thread.join(timeout=30)
    assert not b_thread.is_alive() and not errors, errors
    follower_poll()

    assert seen == ["A", "B"]
    assert [e.job_seq for e in _all(session, job.id)] == [1, 2]


def _seq_of(session: Session, job_id: str, message: str) -> int:
    return next(e.job_seq or 0 for e in events_after(session, job_id, 0) if e.message == message)


def _all(session: Session, job_id: str) -> list[JobEventModel]:
    session.expire_all()
    return events_after(session, job_id, 0)


def test_concurrent_writers_number_every_event_once(engine: Engine, session: Session) -> None:
    """Four writers append 25 events each, in batches, while a follower polls: the numbers are 1..100
    with no gap or repeat, each writer's events keep their order, and the follower saw all 100."""
    job = make_job(session)
    sessions = db.session_factory(engine)
    writers, per_writer = 4, 25
    done = threading.Event()
    followed: list[int] = []
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    def write(writer: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, per_writer, 5):
                with sessions() as s:
                    add_events(s, job.id, [_event(job.id, f"{writer}:{i}") for i in range(start, start + 5)])
                    s.commit()

        return run

    def follow() -> None:
        last = 0
        while True:
            finished = done.is_set()
            with sessions() as reader:
                rows = events_after(reader, job.id, last)
            followed.extend(e.job_seq or 0 for e in rows)
            last = followed[-1] if followed else 0
            if finished and not rows:
                return

    threads = [threading.Thread(target=guarded(write(w))) for w in range(writers)]
    follower = threading.Thread(target=guarded(follow))
    follower.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    follower.join(timeout=60)

    assert not errors, errors
    events = _all(session, job.id)
    total = writers * per_writer
    assert [e.job_seq for e in events] == list(range(1, total + 1))
    for writer in range(writers):
        mine = [e.message for e in events if e.message.startswith(f"{writer}:")]
        assert mine == [f"{writer}:{i}" for i in range(per_writer)]
    assert followed == list(range(1, total + 1)), "the follower saw every event once, in order"
