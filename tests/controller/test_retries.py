"""The controller's decisions when a run ends, with the real local launcher on runs that are gone."""

from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from alignd.config import Settings
from alignd.controller import Controller
from alignd.db import session_factory
from alignd.jobs.state import JobStatus
from alignd.launchers import LocalLauncher
from alignd.models import JobModel
from alignd.storage.local import LocalStore
from alignd.storage.signing import UrlSigner
from tests.db.factories import make_job

GONE_PID = "999999999"
SPEC = {"model": "/models/tiny", "training_file": "file-test"}


def _controller(engine: Engine, tmp_path: Path) -> Controller:
    store = LocalStore(tmp_path / "store", signer=UrlSigner(b"k"), public_url="http://x")
    return Controller(
        sessions=session_factory(engine),
        launcher=LocalLauncher(tmp_path / "runs"),
        store=store,
        settings=Settings(data_dir=tmp_path),
    )


def test_a_lost_run_is_retried_even_after_pauses_and_resumes(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    """attempt counts every launch (pauses included); only automatic retries use up the budget."""
    job = make_job(session, status=JobStatus.running, attempt=5, retries=0, launcher_ref=GONE_PID, spec=SPEC)
    _controller(engine, tmp_path).sync_active()
    session.expire_all()
    moved = session.get(JobModel, job.id)
    assert moved is not None and moved.status == JobStatus.queued.value and moved.retries == 1


def test_retries_stop_at_the_budget(engine: Engine, session: Session, tmp_path: Path) -> None:
    job = make_job(session, status=JobStatus.running, attempt=3, retries=2, launcher_ref=GONE_PID, spec=SPEC)
    _controller(engine, tmp_path).sync_active()
    session.expire_all()
    failed = session.get(JobModel, job.id)
    assert failed is not None and failed.status == JobStatus.failed.value
    assert failed.error is not None and failed.error["code"] == "lost"


def test_a_pausing_job_whose_run_is_gone_is_paused(engine: Engine, session: Session, tmp_path: Path) -> None:
    job = make_job(session, status=JobStatus.pausing, attempt=1, launcher_ref=GONE_PID, spec=SPEC)
    _controller(engine, tmp_path).sync_active()
    session.expire_all()
    paused = session.get(JobModel, job.id)
    assert paused is not None and paused.status == JobStatus.paused.value
