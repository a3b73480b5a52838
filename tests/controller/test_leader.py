"""Two API replicas share one database: only the lease holder runs the controller, and another takes
over once the holder stops renewing (crash) or steps down (shutdown)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine

from alignd.db import session_factory
from alignd.leader import Lease


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_and_takeover_after_expiry(engine: Engine) -> None:
    clock = Clock()
    sessions = session_factory(engine)
    name = f"controller-{id(clock)}"
    first = Lease(sessions, 15, name=name, holder="replica-a", clock=clock)
    second = Lease(sessions, 15, name=name, holder="replica-b", clock=clock)

    assert first.acquire() and not second.acquire()
    clock.now += 10
    assert first.acquire(), "the holder renews"
    clock.now += 10
    assert not second.acquire(), "a renewed lease has not expired yet"
    clock.now += 16
    assert second.acquire() and not first.acquire(), "a silent holder is replaced"


def test_stepping_down_hands_over_at_once(engine: Engine) -> None:
    sessions = session_factory(engine)
    name = "controller-release"
    first = Lease(sessions, 60, name=name, holder="replica-a")
    second = Lease(sessions, 60, name=name, holder="replica-b")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()


def test_racing_replicas_elect_exactly_one(engine: Engine) -> None:
    sessions = session_factory(engine)
    name = "controller-race"
    leases = [Lease(sessions, 60, name=name, holder=f"replica-{i}") for i in range(6)]
    start = threading.Barrier(len(leases))

    def contend(lease: Lease) -> bool:
        start.wait()
        return lease.acquire()

    with ThreadPoolExecutor(len(leases)) as pool:
        results = list(pool.map(contend, leases))
    assert results.count(True) == 1
