"""alignd/jobs/quotas.py: creation-time quotas hold under concurrent requests, on SQLite and Postgres."""

import contextlib
import secrets
import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session, select

from alignd import db
from alignd.config import Settings
from alignd.errors import QuotaExceeded
from alignd.jobs.quotas import job_quota
from alignd.jobs.service import create_job
from alignd.models import BaseModelModel, FileModel, JobModel, ProjectModel
from alignd.schemas import JobCreate
from tests.db.factories import make_project


def _file_and_model(session: Session, project: ProjectModel) -> tuple[str, str]:
    file = FileModel(
        project_id=project.id, filename="t.jsonl", bytes=10, rows=20, sha256="0", storage_key="files/x"
    )
    model = BaseModelModel(id=f"tiny-{secrets.token_hex(4)}", source="/m", location="/m")
    session.add_all([file, model])
    session.commit()
    return file.id, model.id


def test_quota_defaults_come_from_settings(session: Session) -> None:
    settings = Settings(default_quota_concurrent_jobs=3, default_quota_gpus=5)
    assert job_quota(make_project(session), settings).concurrent_jobs == 3
    own = make_project(session, quota_concurrent_jobs=1, quota_gpus=0)
    assert (job_quota(own, settings).concurrent_jobs, job_quota(own, settings).gpus) == (1, 0)


def test_concurrent_creations_cannot_share_the_last_slot(engine: Engine, session: Session) -> None:
    """Six requests at once into a project with room for two: exactly two jobs are created.

    Each request pauses when it reads the project's usage until every request has read it (or half a
    second passed): without the project lock all six would read "no jobs" and all six would insert."""
    project = make_project(session, quota_concurrent_jobs=2)
    file_id, model_id = _file_and_model(session, project)
    request = JobCreate(model=model_id, training_file=file_id, alignd={"resources": {"gpus": 0}})
    settings = Settings()
    creators = 6
    all_read = threading.Barrier(creators, timeout=0.5)

    def at_usage_read(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "count(*)" in statement and project.id in repr(parameters):
            # A broken barrier: the lock let only one through, nobody else is coming.
            with contextlib.suppress(threading.BrokenBarrierError):
                all_read.wait()

    outcomes: list[str] = []

    def create() -> None:
        with db.session_factory(engine)() as own:
            fresh = own.get(ProjectModel, project.id)
            assert fresh is not None
            try:
                create_job(session=own, settings=settings, project=fresh, request=request)
                outcomes.append("created")
            except QuotaExceeded:
                outcomes.append("refused")

    event.listen(engine, "before_cursor_execute", at_usage_read)
    try:
        threads = [threading.Thread(target=create) for _ in range(creators)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        event.remove(engine, "before_cursor_execute", at_usage_read)

    assert sorted(outcomes) == ["created"] * 2 + ["refused"] * 4
    session.expire_all()
    assert len(session.exec(select(JobModel).where(JobModel.project_id == project.id)).all()) == 2
