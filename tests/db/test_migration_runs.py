"""Migration 0003_runs on a database the previous release made (revision 0002), on SQLite and Postgres.

The rows are written with plain SQL in the 0002 schema, as that release left them: a running job with
its launcher ref, token hash and heartbeat on the job row, a paused job with a checkpoint, a succeeded
job with its results, a failed one, and their events and metrics. After the upgrade the live app reads
them as before, the running job's trainer token still works, and the paused job resumes and runs to the
end through the real controller and local launcher (its "trainer" is a script that writes down its
token, waits for the test's word, and leaves the exit summary a successful trainer leaves).
"""

import hashlib
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text
from sqlmodel import Session, col, select

from alignd import db
from alignd.app import create_app
from alignd.config import Settings
from alignd.contract import JobSpec
from alignd.controller import Controller
from alignd.jobs.lifecycle import RunEndReason, RunKind
from alignd.launchers import LocalLauncher, RunState
from alignd.models import RunModel

PREVIOUS = "0002"
T0 = 1_700_000_000
KEY = "sk-alignd-migration-test-key"
TOKEN = "ajt-running-job-token"
SPEC = JobSpec(model="/models/tiny", training_file="file-old").model_dump(mode="json")
REQUEST = {"beta": 0.1, "batch_size": 8, "learning_rate_multiplier": 1.0, "n_epochs": 1}
FAKE_TRAINER = """#!/bin/sh
printf '%s' "$ALIGND_JOB_TOKEN" > token.txt
while [ ! -e finish ]; do sleep 0.05; done
printf '{"exit_code": 0, "reason": "Succeeded", "message": "done"}' > "$ALIGND_TERMINATION_LOG"
"""


def _sha256(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def _insert(connection: Connection, table: str, **values: Any) -> None:
    """One row in the 0002 schema; JSON values go in as their text, as the release stored them."""
    params = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in values.items()}
    columns = ", ".join(f'"{name}"' for name in params)
    placeholders = ", ".join(f":{name}" for name in params)
    connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"), params)


def _job(connection: Connection, job_id: str, status: str, **values: Any) -> None:
    fields: dict[str, Any] = {
        "id": job_id,
        "project_id": "proj_old",
        "model": "tiny",
        "training_file": "file-old",
        "validation_file": None,
        "status": status,
        "spec": SPEC,
        "request": REQUEST,
        "seed": 42,
        "priority": 0,
        "gpus": 0,
        "result_files": [],
        "created_at": T0,
        "created_at_us": T0 * 1_000_000,
        "started_at": T0 + 10,
        "updated_at": T0 + 20,
        "lock_token": f"lock-{job_id}",
        "attempt": 1,
        "retries": 0,
        "event_seq": 0,
    }
    _insert(connection, "jobs", **(fields | values))


def _events(connection: Connection, job_id: str, *messages: str) -> None:
    for seq, message in enumerate(messages, start=1):
        _insert(
            connection,
            "job_events",
            id=f"ftevent-{job_id}-{seq}",
            job_id=job_id,
            job_seq=seq,
            created_at=T0 + seq,
            level="info",
            type="message",
            message=message,
        )
    connection.execute(
        text("UPDATE jobs SET event_seq = :n WHERE id = :id"), {"n": len(messages), "id": job_id}
    )


def _previous_release_database(url: str) -> None:
    engine = db.make_engine(url)
    db.upgrade(engine, PREVIOUS)
    with engine.begin() as c:
        _insert(c, "projects", id="proj_old", name="old-team", created_at=T0)
        _insert(
            c,
            "api_keys",
            id="key_old",
            project_id="proj_old",
            is_admin=False,
            name="old key",
            key_hash=_sha256(KEY),
            key_prefix=KEY[:12],
            created_at=T0,
        )
        _job(
            c,
            "ftjob-running",
            "running",
            launcher_ref="999999999",
            token_hash=_sha256(TOKEN),
            last_heartbeat_at=T0 + 30,
            step=7,
            total_steps=20,
            run_start_step=0,
            run_start_at=T0 + 12,
        )
        _events(c, "ftjob-running", "Job started (attempt 1)", "Step 7: training loss=0.6000")
        _insert(
            c, "metrics", job_id="ftjob-running", step=7, split="train", epoch=0.5,
            values={"loss": 0.6}, created_at=T0 + 25,
        )  # fmt: skip
        _job(c, "ftjob-paused", "paused", attempt=2, retries=1, step=50, total_steps=100)
        _insert(
            c,
            "checkpoints",
            id="ftckpt-old",
            job_id="ftjob-paused",
            step=50,
            metrics={"loss": 0.5},
            storage_prefix="jobs/ftjob-paused/checkpoints/step-00000050/",
            created_at=T0 + 15,
        )
        _events(c, "ftjob-paused", "Job started (attempt 2)", "Job paused; resume continues")
        _job(
            c,
            "ftjob-done",
            "succeeded",
            fine_tuned_model="ft:tiny:proj_old:alignd:ftjob-done",
            trained_tokens=12345,
            result_files=["file-results"],
            finished_at=T0 + 40,
            step=20,
            total_steps=20,
        )
        _events(c, "ftjob-done", "Job started (attempt 1)", "The job has successfully completed")
        _job(
            c,
            "ftjob-oom",
            "failed",
            error={"code": "oomkilled", "message": "out of memory", "param": None},
            finished_at=T0 + 40,
        )
    engine.dispose()


def _until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    _previous_release_database(db_url)
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
    return Settings(
        data_dir=tmp_path / "alignd",
        database_url=db_url,
        public_url="http://testserver",
        run_controller=False,
    )


def test_a_previous_release_database_reads_polls_and_resumes(settings: Settings, tmp_path: Path) -> None:
    user = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings)) as client:
        state = client.app.state.alignd  # type: ignore[attr-defined]

        # The jobs read as before.
        done = client.get("/v1/fine_tuning/jobs/ftjob-done", headers=user).json()
        assert (done["status"], done["fine_tuned_model"], done["trained_tokens"], done["result_files"]) == (
            "succeeded",
            "ft:tiny:proj_old:alignd:ftjob-done",
            12345,
            ["file-results"],
        )
        assert (done["alignd"]["step"], done["alignd"]["total_steps"], done["alignd"]["attempt"]) == (
            20,
            20,
            1,
        )
        oom = client.get("/v1/fine_tuning/jobs/ftjob-oom", headers=user).json()
        assert oom["status"] == "failed" and oom["error"]["code"] == "oomkilled"
        events = client.get("/v1/fine_tuning/jobs/ftjob-done/events", headers=user).json()["data"]
        assert [e["message"] for e in events] == [
            "The job has successfully completed",
            "Job started (attempt 1)",
        ]
        checkpoints = client.get("/v1/fine_tuning/jobs/ftjob-paused/checkpoints", headers=user).json()["data"]
        assert [c["step_number"] for c in checkpoints] == [50]
        metrics = client.get("/v1/fine_tuning/jobs/ftjob-running/metrics", headers=user)
        assert metrics.status_code == 200 and "0.6" in metrics.text
        listed = client.get("/v1/fine_tuning/jobs", headers=user).json()["data"]
        assert {j["id"] for j in listed} == {"ftjob-running", "ftjob-paused", "ftjob-done", "ftjob-oom"}

        # Each started job's latest attempt is a run row.
        with Session(state.engine) as session:
            runs = {run.job_id: run for run in session.exec(select(RunModel))}
        assert set(runs) == {"ftjob-running", "ftjob-paused", "ftjob-done", "ftjob-oom"}
        running = runs["ftjob-running"]
        assert (running.kind, running.attempt, running.launcher_ref, running.last_heartbeat_at) == (
            RunKind.train,
            1,
            "999999999",
            T0 + 30,
        )
        assert running.ended_at is None and (running.run_start_step, running.run_start_at) == (0, T0 + 12)
        assert runs["ftjob-paused"].attempt == 2 and runs["ftjob-paused"].token_hash is None
        assert runs["ftjob-done"].end_reason is RunEndReason.succeeded
        assert runs["ftjob-oom"].end_reason is RunEndReason.oom_killed

        # The running job's trainer still reports and asks where to resume with its token.
        trainer = {"Authorization": f"Bearer {TOKEN}"}
        report = client.post("/internal/v1/jobs/ftjob-running/report", json={}, headers=trainer)
        assert report.status_code == 200, report.text
        resume = client.get("/internal/v1/jobs/ftjob-running/resume", headers=trainer)
        assert resume.status_code == 200 and resume.json()["step"] is None
        wrong = client.post("/internal/v1/jobs/ftjob-paused/report", json={}, headers=trainer)
        assert wrong.status_code == 401
        with Session(state.engine) as session:
            beat = session.get(RunModel, running.id)
            assert beat is not None and beat.last_heartbeat_at is not None
            assert beat.last_heartbeat_at > T0 + 30
        # Cancelled, its token stops working.
        assert client.post("/v1/fine_tuning/jobs/ftjob-running/cancel", headers=user).status_code == 200
        after = client.post("/internal/v1/jobs/ftjob-running/report", json={}, headers=trainer)
        assert after.status_code == 401

        # The paused job resumes from its checkpoint and runs to the end.
        state.store.put_bytes("jobs/ftjob-paused/checkpoints/step-00000050/adapter_model.safetensors", b"w")
        resumed = client.post("/v1/fine_tuning/jobs/ftjob-paused/resume", headers=user)
        assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
        fake = tmp_path / "fake-python"
        fake.write_text(FAKE_TRAINER)
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
        launcher = LocalLauncher(settings.resolved_data_dir() / "runs", python=str(fake))
        controller = Controller(state.sessions, launcher, state.store, settings)

        controller.reconcile_once()

        running_again = client.get("/v1/fine_tuning/jobs/ftjob-paused", headers=user).json()
        assert running_again["status"] == "running" and running_again["alignd"]["attempt"] == 3
        token_file = launcher.run_dir("ftjob-paused") / "token.txt"
        new_token = _until(lambda: token_file.exists() and token_file.read_text(), "the trainer's token")
        new_trainer = {"Authorization": f"Bearer {new_token}"}
        point = client.get("/internal/v1/jobs/ftjob-paused/resume", headers=new_trainer)
        assert point.status_code == 200, point.text
        assert point.json()["step"] == 50 and [f["path"] for f in point.json()["files"]] == [
            "adapter_model.safetensors"
        ]
        (launcher.run_dir("ftjob-paused") / "finish").touch()
        _until(
            lambda: launcher.poll("ftjob-paused", None).state is not RunState.running, "the trainer to exit"
        )

        controller.reconcile_once()

        finished = client.get("/v1/fine_tuning/jobs/ftjob-paused", headers=user).json()
        assert finished["status"] == "succeeded", finished
        assert finished["fine_tuned_model"] == "ft:tiny:proj_old:alignd:ftjob-paused"
        with Session(state.engine) as session:
            attempts = session.exec(
                select(RunModel).where(RunModel.job_id == "ftjob-paused").order_by(col(RunModel.attempt))
            ).all()
            stopped = session.get(RunModel, running.id)
        assert [(r.attempt, r.end_reason) for r in attempts] == [
            (2, RunEndReason.terminated),
            (3, RunEndReason.succeeded),
        ]
        assert attempts[1].token_hash is None
        assert attempts[1].logs_key == "jobs/ftjob-paused/logs/attempt-3.log"
        cancelled = client.get("/v1/fine_tuning/jobs/ftjob-running", headers=user).json()
        assert cancelled["status"] == "cancelled"
        assert stopped is not None and stopped.end_reason is RunEndReason.cancelled


def test_a_downgrade_puts_the_latest_attempt_back_on_its_job(db_url: str) -> None:
    _previous_release_database(db_url)
    engine = db.make_engine(db_url)
    db.upgrade(engine)

    with engine.begin() as connection:
        command.downgrade(db.alembic_config(connection), PREVIOUS)

    assert db.current_revision(engine) == PREVIOUS
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT launcher_ref, token_hash, last_heartbeat_at, run_start_step, run_start_at "
                "FROM jobs WHERE id = 'ftjob-running'"
            )
        ).one()
        assert tuple(row) == ("999999999", _sha256(TOKEN), T0 + 30, 0, T0 + 12)
        events = connection.execute(text("SELECT count(*) FROM job_events")).scalar_one()
        assert events == 6, "no event went with the jobs table's change"
    engine.dispose()
