"""A store outage during the controller's pass: each job's step is isolated, so jobs that need no store
still move on in that pass, a failing step is one event (not one per pass), and the trainer logs the
store refused land once it is back. Real parts: the local launcher on ended runs; a local store whose
temp directory is replaced by a plain file (writes fail, even as root) or an S3 store on a moto server
that is stopped; SQLite and Postgres."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alignd.config import Settings
from alignd.contract import ExitCode, TerminationSummary
from alignd.controller import Controller
from alignd.db import session_factory
from alignd.jobs.state import JobStatus
from alignd.launchers import LocalLauncher, RunStatus
from alignd.models import JobEventModel, JobModel
from alignd.storage import ObjectStore
from alignd.storage.local import TMP_DIR, LocalStore
from alignd.storage.signing import UrlSigner
from tests.db.factories import make_job
from tests.storage.conftest import s3_store
from tests.storage.restartable_moto import Moto, moto

__all__ = ["moto"]

GONE_PID = "999999999"
SPEC = {"model": "/models/tiny", "training_file": "file-test"}


def _ended_run(runs: Path, job: JobModel, exit_code: ExitCode) -> None:
    """What the local launcher leaves for a trainer that has exited: its log and exit summary."""
    directory = runs / job.id
    directory.mkdir(parents=True)
    (directory / "trainer.log").write_bytes(f"log of {job.id}\n".encode())
    summary = TerminationSummary(exit_code=int(exit_code), reason=exit_code.name, message="done")
    (directory / "termination.json").write_text(summary.model_dump_json())


Outage = tuple[ObjectStore, Callable[[], None], Callable[[], None]]
"""A store, how to break it, how to repair it."""


@pytest.fixture(params=["local", "s3"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Outage:
    if request.param == "s3":
        server: Moto = request.getfixturevalue("moto")
        return s3_store(server.endpoint), server.stop, server.start
    store = LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://x")
    staging = store.root / TMP_DIR

    def break_() -> None:
        shutil.rmtree(staging)
        staging.write_text("a file where the store's temp directory should be")

    def repair() -> None:
        staging.unlink()
        staging.mkdir()

    return store, break_, repair


def _job(session: Session, job_id: str) -> JobModel:
    session.expire_all()
    job = session.get(JobModel, job_id)
    assert job is not None
    return job


def _warnings(session: Session, job_id: str) -> list[str]:
    events = session.exec(
        select(JobEventModel).where(JobEventModel.job_id == job_id, JobEventModel.level == "warn")
    )
    return [event.message for event in events]


def test_a_store_outage_fails_only_the_steps_that_need_the_store(
    engine: Engine, session: Session, tmp_path: Path, outage: Outage
) -> None:
    runs = tmp_path / "runs"
    store, break_store, repair_store = outage
    controller = Controller(
        sessions=session_factory(engine),
        launcher=LocalLauncher(runs),
        store=store,
        settings=Settings(data_dir=tmp_path),
    )
    succeeded = make_job(session, status=JobStatus.running, attempt=1, launcher_ref=GONE_PID, spec=SPEC)
    failed = make_job(session, status=JobStatus.running, attempt=1, launcher_ref=GONE_PID, spec=SPEC)
    cancelled = make_job(
        session, status=JobStatus.cancelled, attempt=1, launcher_ref=GONE_PID, desired="cancel", spec=SPEC
    )
    _ended_run(runs, succeeded, ExitCode.SUCCESS)
    _ended_run(runs, failed, ExitCode.BAD_INPUT)
    _ended_run(runs, cancelled, ExitCode.TERMINATED)
    break_store()

    controller.reconcile_once()

    # The success needs its results file in the store: it waits, with the reason as one event.
    assert _job(session, succeeded.id).status == JobStatus.running.value
    assert any("could not sync the run's state" in m for m in _warnings(session, succeeded.id))
    # The others need no store to move on: settled and stopped in the same pass, logs owed.
    assert _job(session, failed.id).status == JobStatus.failed.value
    assert _job(session, cancelled.id).desired is None
    assert any("could not keep the trainer's logs" in m for m in _warnings(session, failed.id))
    before = {job.id: _warnings(session, job.id) for job in (succeeded, failed, cancelled)}

    controller.reconcile_once()

    # A long outage is one event per failing step, not one per pass.
    assert {job.id: _warnings(session, job.id) for job in (succeeded, failed, cancelled)} == before

    repair_store()
    controller.reconcile_once()

    assert _job(session, succeeded.id).status == JobStatus.succeeded.value
    for job in (succeeded, failed, cancelled):
        kept = b"".join(store.iter_bytes(f"jobs/{job.id}/logs/attempt-1.log"))
        assert kept == f"log of {job.id}\n".encode()


class _PollFailsFor(LocalLauncher):
    """A backend that errors on one job's poll, as a cluster API answering 500 for one Job would."""

    def __init__(self, root: Path, broken: str) -> None:
        super().__init__(root)
        self.broken = broken

    def poll(self, job_id: str, ref: str | None) -> RunStatus:
        if job_id == self.broken:
            raise RuntimeError("the cluster API answered 500")
        return super().poll(job_id, ref)


def test_a_poll_that_raises_for_one_job_leaves_the_others_moving_in_the_same_pass(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    jobs = [
        make_job(session, status=JobStatus.running, attempt=1, launcher_ref=GONE_PID, spec=SPEC)
        for _ in range(3)
    ]
    broken, succeeded, failed = jobs
    for job, code in zip(jobs, (ExitCode.SUCCESS, ExitCode.SUCCESS, ExitCode.BAD_INPUT), strict=True):
        _ended_run(runs, job, code)
    controller = Controller(
        sessions=session_factory(engine),
        launcher=_PollFailsFor(runs, broken=broken.id),
        store=LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://x"),
        settings=Settings(data_dir=tmp_path),
    )

    controller.reconcile_once()

    assert _job(session, succeeded.id).status is JobStatus.succeeded
    assert _job(session, failed.id).status is JobStatus.failed
    assert _job(session, broken.id).status is JobStatus.running
    assert _warnings(session, broken.id) == [
        "The controller could not sync the run's state (RuntimeError); it retries on its next pass"
    ]
