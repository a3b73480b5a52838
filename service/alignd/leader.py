"""Leader election through a database lease, so API replicas never run two controllers at once.

The holder renews the lease every pass; another replica takes it over only once it has expired.
Both moves are one compare-and-set UPDATE, which SQLite and Postgres serialise on the row.
"""

import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col

from alignd.models import LeaseModel

CONTROLLER_LEASE = "controller"


def default_holder() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(4)}"


@dataclass
class Lease:
    sessions: sessionmaker[Session]
    ttl_seconds: float
    name: str = CONTROLLER_LEASE
    holder: str = field(default_factory=default_holder)
    clock: Callable[[], float] = time.time

    def acquire(self) -> bool:
        """Take or renew the lease; True while this process is the leader."""
        now = self.clock()
        with self.sessions() as session:
            result = session.execute(
                update(LeaseModel)
                .where(
                    col(LeaseModel.name) == self.name,
                    or_(col(LeaseModel.holder) == self.holder, col(LeaseModel.expires_at) < now),
                )
                .values(holder=self.holder, expires_at=now + self.ttl_seconds)
            )
            session.commit()
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
            if session.get(LeaseModel, self.name) is not None:
                return False
            session.add(LeaseModel(name=self.name, holder=self.holder, expires_at=now + self.ttl_seconds))
            try:
                session.commit()
            except IntegrityError:
                return False
            return True

    def release(self) -> None:
        """Step down at shutdown, so another replica takes over without waiting for expiry."""
        with self.sessions() as session:
            session.execute(
                update(LeaseModel)
                .where(col(LeaseModel.name) == self.name, col(LeaseModel.holder) == self.holder)
                .values(expires_at=0.0)
            )
            session.commit()
