"""Appending to a job's event log in an order readers can trust.

A global autoincrement cannot be a cursor on Postgres: two writers take sequence values 10 and 11, the
one holding 11 commits first, a follower reads "after 9", sees 11, moves its cursor there, and event 10
is never sent. So each event also gets `job_seq`, taken from the job row with
`UPDATE jobs SET event_seq = event_seq + n ... RETURNING event_seq` in the transaction that inserts it.
The UPDATE holds the job row's lock until commit, so the next writer of the same job waits and numbers
after us: per job, events commit in `job_seq` order, and whoever has seen n has seen 1..n-1.
"""

from collections.abc import Sequence

from sqlalchemy import update
from sqlmodel import Session, col

from alignd.errors import NotFound
from alignd.models import JobEventModel, JobModel


def add_events(session: Session, job_id: str, events: Sequence[JobEventModel]) -> None:
    """Number `events` (in the given order) after the job's last event and add them to the session.

    Locks the job row until the caller commits, which it should do soon: every other writer of this
    job's events waits for it.
    """
    if not events:
        return
    statement = (
        update(JobModel)
        .where(col(JobModel.id) == job_id)
        .values(event_seq=col(JobModel.event_seq) + len(events))
        .returning(col(JobModel.event_seq))
        .execution_options(synchronize_session=False)
    )
    last = session.execute(statement).scalar_one_or_none()
    if last is None:
        raise NotFound(f"job {job_id} not found", param="job_id")
    first = last - len(events) + 1
    for offset, event in enumerate(events):
        event.job_id = job_id
        event.job_seq = first + offset
        session.add(event)
