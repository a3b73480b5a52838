"""A job's token reaches only that job's storage: through a live server (uvicorn on loopback), a trainer
that reports a checkpoint, or asks for upload URLs, anywhere outside `jobs/{its job}/` gets a 400 naming
the field and its job gets an error event; resume and the owner's checkpoint download never presign or
archive another prefix's objects, even for a checkpoint row stored before reports were checked."""

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from alignd import auth
from alignd.config import Settings
from alignd.db import make_engine
from alignd.jobs.state import JobStatus, transition
from alignd.models import CheckpointModel, JobModel
from alignd.server import BackgroundServer, free_port
from alignd.storage import ObjectStore, store_from_settings
from alignd_trainer.synthetic import preference_rows
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key

SECRET = b"another project's bytes"


@dataclass
class Job:
    id: str
    token: str
    owner: httpx.Client
    trainer: httpx.Client


@dataclass
class World:
    api: httpx.Client
    settings: Settings
    store: ObjectStore
    mine: Job
    theirs: Job
    their_file_key: str

    def add_checkpoint_row(self, job: Job, step: int, prefix: str) -> None:
        """A row as a report stored it before reports were checked."""
        engine = make_engine(self.settings.resolved_database_url())
        with Session(engine) as session:
            session.add(CheckpointModel(job_id=job.id, step=step, storage_prefix=prefix))
            session.commit()
        engine.dispose()


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # registration checks the directory; nothing trains
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "alignd",
        database_url=db_url,
        admin_key=ADMIN_KEY,
        public_url=url,
        run_controller=False,
    )
    with BackgroundServer(settings, "127.0.0.1", port), httpx.Client(base_url=url, timeout=30) as api:
        added = api.post("/v1/models", json={"id": "m", "source": str(model_dir)}, headers=bearer(ADMIN_KEY))
        assert added.is_success, added.text
        mine = _running_job(api, settings, new_project_key(api, "mine"))
        theirs = _running_job(api, settings, new_project_key(api, "theirs"))
        their_file = theirs.owner.get("/v1/files").json()["data"][0]["id"]
        store = store_from_settings(settings)
        try:
            yield World(api, settings, store, mine, theirs, f"files/{their_file}")
        finally:
            for job in (mine, theirs):
                job.owner.close()
                job.trainer.close()


def _running_job(api: httpx.Client, settings: Settings, key: str) -> Job:
    owner = httpx.Client(base_url=str(api.base_url), headers=bearer(key), timeout=30)
    data = "".join(json.dumps(row) + "\n" for row in preference_rows(8, seed=3))
    file = owner.post("/v1/files", files={"file": ("d.jsonl", data)}, data={"purpose": "fine-tune"})
    assert file.is_success, file.text
    body = {"model": "m", "training_file": file.json()["id"], "alignd": {"resources": {"gpus": 0}}}
    job = owner.post("/v1/fine_tuning/jobs", json=body)
    assert job.is_success, job.text
    job_id = job.json()["id"]
    engine = make_engine(settings.resolved_database_url())
    with Session(engine) as session:
        assert transition(session, job_id, to=JobStatus.running, event="started by the test")
        token = auth.issue_job_token(session, job_id)
    engine.dispose()
    trainer = httpx.Client(
        base_url=f"{api.base_url}/internal/v1/jobs/{job_id}", headers=bearer(token), timeout=30
    )
    return Job(job_id, token, owner, trainer)


def _upload_checkpoint(job: Job, step: int, files: dict[str, bytes]) -> str:
    """What the trainer does: ask for URLs, PUT every file, report the prefix it was given."""
    plan = job.trainer.post(
        "/upload_urls", json={"artifact": f"checkpoints/step-{step:08d}", "files": list(files)}
    )
    assert plan.status_code == 200, plan.text
    for name, content in files.items():
        put = httpx.put(plan.json()["urls"][name], content=content)
        assert put.is_success, put.text
    prefix: str = plan.json()["prefix"]
    report = job.trainer.post("/report", json={"checkpoints": [{"step": step, "path": prefix}]})
    assert report.status_code == 200, report.text
    return prefix


def _errors(job: Job) -> list[dict[str, Any]]:
    events = job.owner.get(f"/v1/fine_tuning/jobs/{job.id}/events", params={"limit": 100})
    assert events.status_code == 200, events.text
    return [event for event in events.json()["data"] if event["level"] == "error"]


def _resume(job: Job) -> dict[str, Any]:
    point = job.trainer.get("/resume")
    assert point.status_code == 200, point.text
    resumed: dict[str, Any] = point.json()
    return resumed


def _archive(job: Job, step: int) -> httpx.Response:
    return job.owner.get(f"/v1/fine_tuning/jobs/{job.id}/artifacts/checkpoint/{step}")


def _names(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return set(tar.getnames())


def test_a_checkpoint_reported_outside_the_job_is_refused_and_shown_to_the_owner(world: World) -> None:
    mine, theirs = world.mine, world.theirs
    _upload_checkpoint(theirs, 5, {"state.json": SECRET})
    world.store.put_bytes(f"jobs/{mine.id}0/checkpoints/step-00000001/state.json", SECRET)
    outside = [
        "files",
        world.their_file_key,
        f"jobs/{theirs.id}/checkpoints/step-00000005",
        f"jobs/{mine.id}/../{theirs.id}/checkpoints/step-00000005",
        f"jobs/{mine.id}/../x",
        f"jobs/{mine.id}0/checkpoints/step-00000001",
        f"/jobs/{mine.id}/checkpoints/step-00000001",
        f"jobs/{mine.id}",
    ]
    for number, path in enumerate(outside, start=1):
        report = mine.trainer.post(
            "/report",
            json={"events": [{"message": "hi"}], "checkpoints": [{"step": number, "path": path}]},
        )
        assert report.status_code == 400, (path, report.text)
        error = report.json()["error"]
        assert error["param"] == "checkpoints[0].path" and error["code"] == "path_outside_job"
        assert f"jobs/{mine.id}/" in error["message"]
        assert len(_errors(mine)) == number, path
        assert path[:50] in _errors(mine)[0]["message"]

    assert _resume(mine) == {"step": None, "files": []}
    assert mine.owner.get(f"/v1/fine_tuning/jobs/{mine.id}/checkpoints").json()["data"] == []
    messages = mine.owner.get(f"/v1/fine_tuning/jobs/{mine.id}/events").json()["data"]
    assert all(event["message"] != "hi" for event in messages), "a refused batch is refused whole"
    assert _errors(theirs) == []


def test_upload_urls_outside_the_job_are_refused(world: World) -> None:
    mine = world.mine
    for index, name in enumerate(
        ["../../../files/x", f"../../../{world.theirs.id}/adapter/a", "/etc/x", "a//b"]
    ):
        plan = mine.trainer.post("/upload_urls", json={"artifact": "adapter", "files": ["ok.json", name]})
        assert plan.status_code == 400, (name, plan.text)
        assert plan.json()["error"]["param"] == "files[1]"
        assert len(_errors(mine)) == index + 1
    plan = mine.trainer.post("/upload_urls", json={"artifact": "adapter", "files": ["adapter_config.json"]})
    assert plan.status_code == 200, plan.text
    assert plan.json()["prefix"] == f"jobs/{mine.id}/adapter"


def test_rows_stored_outside_the_job_are_never_presigned_nor_archived(world: World) -> None:
    mine = world.mine
    prefix = _upload_checkpoint(mine, 3, {"model.safetensors": b"weights", "sub/state.json": b"{}"})
    assert prefix == f"jobs/{mine.id}/checkpoints/step-00000003"
    world.store.put_bytes(f"jobs/{mine.id}0/checkpoints/step-00000001/state.json", SECRET)
    world.add_checkpoint_row(mine, 7, "files")
    world.add_checkpoint_row(mine, 8, f"jobs/{mine.id}0/checkpoints/step-00000001")
    world.add_checkpoint_row(mine, 9, f"jobs/{mine.id}/../{world.theirs.id}")

    point = _resume(mine)
    assert point["step"] == 3
    assert {item["path"] for item in point["files"]} == {"model.safetensors", "sub/state.json"}
    assert {httpx.get(item["url"]).content for item in point["files"]} == {b"weights", b"{}"}

    archive = _archive(mine, 3)
    assert archive.status_code == 200, archive.text
    assert _names(archive.content) == {"step-3/model.safetensors", "step-3/sub/state.json"}
    for step in (7, 8, 9):
        refused = _archive(mine, step)
        assert refused.status_code == 404, refused.text
        assert SECRET not in refused.content
        assert "outside the job's storage" in refused.json()["error"]["message"]


def _start_running(world: World, owner: httpx.Client, body: dict[str, Any]) -> Job:
    job = owner.post("/v1/fine_tuning/jobs", json=body)
    assert job.is_success, job.text
    job_id = job.json()["id"]
    engine = make_engine(world.settings.resolved_database_url())
    with Session(engine) as session:
        assert transition(session, job_id, to=JobStatus.running, event="started by the test")
        token = auth.issue_job_token(session, job_id)
    engine.dispose()
    trainer = httpx.Client(
        base_url=f"{world.api.base_url}/internal/v1/jobs/{job_id}", headers=bearer(token), timeout=30
    )
    return Job(job_id, token, owner, trainer)


def test_starting_weights_are_served_only_from_the_project_s_own_jobs(world: World) -> None:
    """A job started from a checkpoint gets presigned URLs for that checkpoint's weights (not its optimizer
    state); a spec naming another project's job gets a 404 and nothing presigned."""
    mine, theirs = world.mine, world.theirs
    weights = {
        "adapter/adapter_config.json": b"{}",
        "adapter/adapter_model.safetensors": b"w",
        "optimizer.pt": b"o",
    }
    _upload_checkpoint(mine, 3, weights)
    _upload_checkpoint(theirs, 3, {"adapter/adapter_model.safetensors": SECRET})
    assert mine.trainer.get("/init_files").status_code == 404, "a job started from its base has no layers"
    [checkpoint] = mine.owner.get(f"/v1/fine_tuning/jobs/{mine.id}/checkpoints").json()["data"]
    training_file = mine.owner.get("/v1/files").json()["data"][0]["id"]
    body = {
        "model": "m",
        "training_file": training_file,
        "alignd": {"resources": {"gpus": 0}, "init_from_checkpoint": checkpoint["id"]},
    }
    chained = _start_running(world, mine.owner, body)
    try:
        listing = chained.trainer.get("/init_files", params={"layer": 0})
        assert listing.status_code == 200, listing.text
        assert listing.json()["location"] == f"jobs/{mine.id}/checkpoints/step-00000003/adapter"
        files = {item["path"]: httpx.get(item["url"]).content for item in listing.json()["files"]}
        assert files == {"adapter_config.json": b"{}", "adapter_model.safetensors": b"w"}
        assert chained.trainer.get("/init_files", params={"layer": 1}).status_code == 404

        engine = make_engine(world.settings.resolved_database_url())
        with Session(engine) as session:
            row = session.get(JobModel, chained.id)
            assert row is not None
            foreign = {"kind": "adapter", "location": f"jobs/{theirs.id}/checkpoints/step-00000003/adapter"}
            row.spec = row.spec | {"init": {"source": "x", "layers": [foreign]}}
            session.add(row)
            session.commit()
        engine.dispose()
        refused = chained.trainer.get("/init_files", params={"layer": 0})
        assert refused.status_code == 404 and "cannot read" in refused.json()["error"]["message"]
        assert SECRET.decode() not in refused.text and "X-Amz" not in refused.text
    finally:
        chained.trainer.close()
