"""The sweeper: removes what interrupted uploads and deletes left behind (see `alignd.files`).

The leader's controller runs it every `sweeper_interval_seconds`. It removes:
- staged: the store's temp files of uploads cut short (a killed server), once older than the grace
  period (`sweeper_grace_seconds`);
- unregistered: objects under `files/` with no file row, once older than the grace period: an upload
  killed between storing its object and registering it, or one whose row could not be written. The
  grace period keeps it away from uploads whose row is being written right now;
- deleting: rows marked deleting whose delete was cut short or hit a store error: their object, then
  the row.
What it removed is counted in `alignd_sweeper_removed_total{kind}` and logged.
"""

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select

from alignd.errors import NotFound
from alignd.files import finish_delete
from alignd.models import FileModel, FileState
from alignd.storage import ObjectStore

log = logging.getLogger("alignd.sweeper")
FILES_PREFIX = "files/"
LOOKUP_BATCH = 500
"""Keys looked up in the database per query."""


@dataclass(frozen=True)
class SweepReport:
    """How many things one pass removed, by kind."""

    staged: int = 0
    unregistered: int = 0
    deleting: int = 0

    def counts(self) -> dict[str, int]:
        return {"staged": self.staged, "unregistered": self.unregistered, "deleting": self.deleting}


@dataclass
class Sweeper:
    sessions: sessionmaker[Session]
    store: ObjectStore
    grace_seconds: float
    clock: Callable[[], float] = time.time
    removed: Counter | None = None
    """`alignd_sweeper_removed_total{kind}`."""

    def sweep(self) -> SweepReport:
        older_than = self.clock() - self.grace_seconds
        report = SweepReport(
            deleting=self._finish_deletes(),
            staged=self.store.remove_staged(older_than),
            unregistered=self._remove_unregistered(older_than),
        )
        for kind, count in report.counts().items():
            if self.removed is not None and count:
                self.removed.labels(kind).inc(count)
        if any(report.counts().values()):
            log.info(
                "sweeper removed %d staged uploads, %d unregistered files, %d deletes finished",
                report.staged,
                report.unregistered,
                report.deleting,
            )
        return report

    def _finish_deletes(self) -> int:
        with self.sessions() as session:
            marked = list(
                session.exec(
                    select(FileModel.id, FileModel.storage_key).where(
                        FileModel.status == FileState.deleting.value
                    )
                )
            )
            for file_id, key in marked:
                finish_delete(session, self.store, file_id=file_id, key=key)
        return len(marked)

    def _remove_unregistered(self, older_than: float) -> int:
        # Listed before the rows are read: an object registered in between is young, so it is kept.
        keys = self.store.list(FILES_PREFIX)
        registered = self._registered(keys)
        removed = 0
        for key in keys:
            if key not in registered and self._older(key, older_than):
                self.store.delete(key)
                removed += 1
        return removed

    def _registered(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self.sessions() as session:
            for start in range(0, len(keys), LOOKUP_BATCH):
                batch = keys[start : start + LOOKUP_BATCH]
                found.update(
                    session.exec(select(FileModel.storage_key).where(col(FileModel.storage_key).in_(batch)))
                )
        return found

    def _older(self, key: str, older_than: float) -> bool:
        try:
            return self.store.modified_at(key) < older_than
        except NotFound:  # deleted since the listing
            return False
