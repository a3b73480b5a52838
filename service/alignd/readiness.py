"""Readiness: whether this server can do its work now (database, object store, free disk).

Probes arrive often and from several places (the kubelet, load balancers, monitors). A check that
hangs on a stopped store must not hold a request thread per probe until the pool runs dry and
everything else waits behind it. So one check runs at a time, on a thread of its own; its outcome
answers every probe for `cache_seconds`; and a probe waits for it at most `timeout_seconds` from the
moment it started, then answers 503 (and so does every probe while that check is still stuck).
"""

import asyncio
import copy
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from alignd.config import Settings
from alignd.errors import AligndError, Unavailable
from alignd.faults import DATABASE_DOWN, database_error
from alignd.storage import ObjectStore

MIB = 1024**2


class Readiness:
    """`await check()` returns when ready and raises an `AligndError` (503) when not."""

    def __init__(
        self,
        check: Callable[[], None],
        *,
        timeout_seconds: float,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._timeout = timeout_seconds
        self._cache = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._running: Future[AligndError | None] | None = None
        self._started_at = 0.0
        self._outcome: tuple[float, AligndError | None] | None = None
        """When the last check ended (or was given up on) and its error; None: it passed."""

    async def check(self) -> None:
        outcome = self._outcome
        if outcome is None or self._clock() - outcome[0] >= self._cache:
            error = await self._fresh()
        else:
            error = outcome[1]
        if error is not None:
            raise copy.copy(error)  # one instance per probe: raising adds to an exception's traceback

    async def _fresh(self) -> AligndError | None:
        running, started_at = self._start()
        remaining = started_at + self._timeout - self._clock()
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), max(remaining, 0))
        except TimeoutError:
            error = Unavailable(
                f"the readiness check (database, object store, free disk) did not finish within "
                f"{self._timeout:g} s; one of them is not answering, see the server log"
            )
            self._outcome = (self._clock(), error)
            return error

    def _start(self) -> tuple[Future[AligndError | None], float]:
        """The check in progress, or a new one if none is."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                self._started_at = self._clock()
                threading.Thread(
                    target=self._run, args=(self._running,), name="alignd-readiness", daemon=True
                ).start()
            return self._running, self._started_at

    def _run(self, running: Future[AligndError | None]) -> None:
        """The outcome is the future's result, never its exception: a probe that gave up on it leaves
        nobody to retrieve an exception, and asyncio would log one as lost."""
        running.set_running_or_notify_cancel()
        error: AligndError | None = None
        try:
            self._check()
        except AligndError as exc:
            error = exc
        except Exception as exc:
            error = Unavailable(f"readiness check failed: {exc!r}")
        self._outcome = (self._clock(), error)
        running.set_result(error)


def check_ready(*, engine: Engine, store: ObjectStore, disks: dict[str, Path], min_free_bytes: int) -> None:
    """Raise Unavailable if the database, the store or a disk alignd writes to cannot be used now.
    `disks` maps what an operator would look at ("the data dir (ALIGND_DATA_DIR)") to its path."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise (database_error(exc) or Unavailable(DATABASE_DOWN)) from exc
    store.ping()
    for where, path in disks.items():
        free = _free_bytes(path)
        if free < min_free_bytes:
            raise Unavailable(
                f"only {free / MIB:.1f} MiB free on the disk of {where}, under the "
                f"{min_free_bytes / MIB:.0f} MiB ALIGND_READYZ_MIN_FREE_BYTES asks for; an operator must "
                "free space or grow the volume",
                code="disk_full",
            )


def disks(settings: Settings) -> dict[str, Path]:
    """The directories alignd writes to, for the free-space check."""
    found = {"the data dir (ALIGND_DATA_DIR)": settings.resolved_data_dir()}
    if settings.store == "local":
        found["the local store (ALIGND_STORE_DIR)"] = settings.resolved_store_dir()
    found["the upload spool (ALIGND_UPLOAD_SPOOL_DIR)"] = settings.upload_spool_dir or Path(
        tempfile.gettempdir()
    )
    return found


def _free_bytes(path: Path) -> int:
    """Free space a non-root process could use on path's file system (as `df` shows it)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def readiness_from_settings(settings: Settings, *, engine: Engine, store: ObjectStore) -> Readiness:
    def check() -> None:
        check_ready(
            engine=engine, store=store, disks=disks(settings), min_free_bytes=settings.readyz_min_free_bytes
        )

    return Readiness(
        check, timeout_seconds=settings.readyz_timeout_seconds, cache_seconds=settings.readyz_cache_seconds
    )
