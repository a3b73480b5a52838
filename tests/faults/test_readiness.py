"""Readiness probes never pile up: one check at a time, shared by every probe that arrives meanwhile, its
outcome kept for a moment, and a stuck check answered as a 503 after its timeout (alignd/readiness.py)."""

import asyncio
import threading

import pytest

from alignd.errors import AligndError, Unavailable
from alignd.readiness import Readiness
from tests.faults.conftest import wait_until

PROBES = 50


class Check:
    """A readiness check that waits for `release` and counts how often it ran."""

    def __init__(self, error: AligndError | None = None) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.error = error

    def __call__(self) -> None:
        self.calls += 1
        self.release.wait(timeout=30)
        if self.error is not None:
            raise self.error


async def _probe(readiness: Readiness) -> AligndError | None:
    try:
        await readiness.check()
    except AligndError as exc:
        return exc
    return None


def test_concurrent_probes_share_one_check() -> None:
    check = Check()
    readiness = Readiness(check, timeout_seconds=30, cache_seconds=60)

    async def burst() -> list[AligndError | None]:
        probes = [asyncio.create_task(_probe(readiness)) for _ in range(PROBES)]
        await asyncio.sleep(0)  # every probe starts and waits on the one check in flight
        check.release.set()
        return await asyncio.gather(*probes)

    assert asyncio.run(burst()) == [None] * PROBES
    assert asyncio.run(_probe(readiness)) is None, "answered from the cached outcome"
    assert check.calls == 1


def test_a_stuck_check_answers_503_and_is_not_started_twice() -> None:
    check = Check()
    readiness = Readiness(check, timeout_seconds=0.2, cache_seconds=0)

    error = asyncio.run(_probe(readiness))
    assert isinstance(error, Unavailable) and "did not finish within 0.2 s" in error.message
    again = asyncio.run(_probe(readiness))
    assert isinstance(again, Unavailable), "the first check is still stuck: no second one, the same answer"
    assert check.calls == 1

    check.release.set()  # the stuck check ends; a probe after that starts a new one, which passes
    wait_until(lambda: asyncio.run(_probe(readiness)) is None, timeout=10, what="readiness recovering")
    assert check.calls == 2


def test_a_failed_check_is_remembered_for_the_cache_time() -> None:
    check = Check(Unavailable("object store bucket alignd does not exist", code="store_unavailable"))
    check.release.set()
    readiness = Readiness(check, timeout_seconds=5, cache_seconds=60)
    first, second = asyncio.run(_probe(readiness)), asyncio.run(_probe(readiness))
    assert isinstance(first, Unavailable) and isinstance(second, Unavailable)
    assert first is not second and second.code == "store_unavailable"
    assert check.calls == 1


@pytest.mark.parametrize("exc", [RuntimeError("boom"), OSError("gone")])
def test_an_unexpected_failure_is_a_503(exc: Exception) -> None:
    def check() -> None:
        raise exc

    error = asyncio.run(_probe(Readiness(check, timeout_seconds=5, cache_seconds=0)))
    assert isinstance(error, Unavailable) and "readiness check failed" in error.message
