"""Downloadable results of a job: the adapter (or full weights), the merged model of a LoRA job, and
checkpoints, as tar.gz."""

import io
import tarfile
import tempfile
from collections.abc import Iterator

from sqlmodel import Session, col, select

from alignd.contract import (
    JobSpec,
    ModelFile,
    ReportBatch,
    ResumeCheckpoint,
    TrainingType,
    UploadUrlsRequest,
    UploadUrlsResponse,
)
from alignd.errors import InvalidRequest, NotFound
from alignd.jobs.events import add_events
from alignd.jobs.paths import confined_key, is_confined, job_root
from alignd.jobs.state import TERMINAL, JobStatus
from alignd.models import CheckpointModel, JobEventModel, JobModel, MetricModel
from alignd.storage import ObjectStore

CHUNK = 1 << 20
SPOOL_BYTES = 64 << 20


def adapter_prefix(store: ObjectStore, job: JobModel) -> str:
    for name in ("adapter", "model"):
        if store.list(f"{job_root(job.id)}{name}/"):
            return f"{job_root(job.id)}{name}"
    raise NotFound(
        f"job {job.id} has no trained weights yet (status {job.status})", param="fine_tuning_job_id"
    )


MERGED = "merged"
"""The artifact (and key segment, `jobs/{job_id}/merged/`) the trainer uploads the merged model as."""
MERGE_YOURSELF = (
    "download artifacts/adapter and merge it with peft: "
    "PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()"
)


def merged_prefix(store: ObjectStore, job: JobModel) -> str:
    """Where a LoRA job's merged model lives. Served only once the job succeeded: the trainer uploads it
    last, and success is recorded only after the trainer exits, so a succeeded job's copy is complete."""
    missing = merged_missing_reason(job)
    if missing is None and store.list(f"{job_root(job.id)}{MERGED}/"):
        return f"{job_root(job.id)}{MERGED}"
    raise missing or NotFound(
        f"job {job.id} succeeded without storing merged weights (it may predate them); {MERGE_YOURSELF}",
        param="fine_tuning_job_id",
    )


def merged_missing_reason(job: JobModel) -> NotFound | None:
    """Why a job's merged model cannot be served, judged from its spec and status alone; None when it
    should be there."""
    spec = JobSpec.model_validate(job.spec)
    if spec.training_type is TrainingType.full:
        return NotFound(
            f"job {job.id} is full fine-tuning: its trained weights are full weights already, served at "
            "artifacts/adapter; there is no separate merged model",
            param="fine_tuning_job_id",
            code="merged_not_applicable",
        )
    if not spec.merged_weights:
        return NotFound(
            f"job {job.id} was created with alignd.merged_weights false, so no merged model was stored; "
            + MERGE_YOURSELF,
            param="fine_tuning_job_id",
            code="merged_weights_off",
        )
    status = JobStatus(job.status)
    if status is JobStatus.succeeded:
        return None
    state = f"ended with status {status}" if status in TERMINAL else f"has not finished (status {status})"
    return NotFound(
        f"job {job.id} {state}: a merged model is stored when training finishes and served once "
        "the job has succeeded",
        param="fine_tuning_job_id",
        code="merged_not_ready",
    )


def checkpoint_prefix(session: Session, job: JobModel, step: int) -> str:
    """Where the checkpoint at `step` lives; a row pointing outside the job's prefix (stored before
    reports were checked) is never served."""
    row = session.exec(
        select(CheckpointModel).where(CheckpointModel.job_id == job.id, CheckpointModel.step == step)
    ).first()
    if row is None:
        raise NotFound(f"job {job.id} has no checkpoint at step {step}", param="step")
    if not is_confined(job.id, row.storage_prefix):
        raise NotFound(
            f"job {job.id}'s checkpoint at step {step} was reported outside the job's storage "
            f"({job_root(job.id)}) and is not served; use another checkpoint",
            param="step",
        )
    return row.storage_prefix.rstrip("/")


def resume_point(
    session: Session, store: ObjectStore, job: JobModel, *, expires_seconds: int
) -> ResumeCheckpoint:
    """The latest checkpoint the trainer reported (reported only once fully uploaded), as download URLs.

    Rows pointing outside the job's prefix are passed over, so they are never presigned."""
    rows = session.exec(
        select(CheckpointModel)
        .where(CheckpointModel.job_id == job.id)
        .order_by(col(CheckpointModel.step).desc())
    )
    latest = next((row for row in rows if is_confined(job.id, row.storage_prefix)), None)
    if latest is None:
        return ResumeCheckpoint()
    root = latest.storage_prefix.rstrip("/") + "/"
    files = [
        ModelFile(
            path=key[len(root) :], url=store.presigned_get_url(key, expires_seconds), size=store.size(key)
        )
        for key in store.list(root)
    ]
    return ResumeCheckpoint(step=latest.step, files=files)


def upload_urls(
    session: Session, store: ObjectStore, job: JobModel, request: UploadUrlsRequest, *, expires_seconds: int
) -> UploadUrlsResponse:
    """Presigned PUT URLs for the files of one artifact; every key must lie under the job's prefix."""
    prefix = _confined(session, job, f"{job_root(job.id)}{request.artifact}", field="artifact")
    keys = {
        name: _confined(session, job, f"{prefix}/{name}", field=f"files[{index}]")
        for index, name in enumerate(request.files)
    }
    urls = {name: store.presigned_put_url(key, expires_seconds) for name, key in keys.items()}
    return UploadUrlsResponse(urls=urls, prefix=prefix)


def check_report_paths(session: Session, job: JobModel, batch: ReportBatch) -> None:
    """Refuse a report batch naming a checkpoint outside the job's prefix, before any of it is stored."""
    for index, checkpoint in enumerate(batch.checkpoints):
        _confined(session, job, checkpoint.path, field=f"checkpoints[{index}].path")


def _confined(session: Session, job: JobModel, path: str, *, field: str) -> str:
    """`path` as a key under the job's prefix; otherwise the refusal becomes an error event the job's
    owner sees (committed on its own), and then the 400."""
    try:
        return confined_key(job.id, path, field=field)
    except InvalidRequest as refused:
        session.rollback()
        event = JobEventModel(
            job_id=job.id,
            level="error",
            type="message",
            message=f"The trainer named storage outside this job; the request was refused: {refused.message}",
            data={"param": field, "code": refused.code},
        )
        add_events(session, job.id, [event])
        session.commit()
        raise


def tar_gz(store: ObjectStore, prefix: str, root: str) -> Iterator[bytes]:
    """Every object under `prefix` as `root/<path>` in a gzip'd tar, spooled to disk past 64 MiB."""
    directory = prefix.rstrip("/") + "/"
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        with tarfile.open(fileobj=spool, mode="w:gz") as archive:
            for key in store.list(directory):
                info = tarfile.TarInfo(f"{root}/{key[len(directory) :]}")
                info.size = store.size(key)
                archive.addfile(info, _Reader(store.iter_bytes(key)))
        spool.seek(0)
        while block := spool.read(CHUNK):
            yield block


class _Reader(io.RawIOBase):
    """A file-like view of a chunk iterator, for tarfile.addfile."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        out, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return out


def checkpoints(
    session: Session, job: JobModel, *, after: str | None = None, limit: int | None = None
) -> tuple[list[CheckpointModel], bool]:
    """Newest (highest step) first; `after` is a checkpoint id from the previous page. Returns the page
    and whether more follow."""
    query = select(CheckpointModel).where(CheckpointModel.job_id == job.id)
    if after is not None:
        anchor = session.exec(query.where(CheckpointModel.id == after)).first()
        if anchor is None:
            raise InvalidRequest(f"no checkpoint with id {after!r} in this job", param="after")
        query = query.where(col(CheckpointModel.step) < anchor.step)
    query = query.order_by(col(CheckpointModel.step).desc())
    rows = list(session.exec(query if limit is None else query.limit(limit + 1)))
    if limit is None:
        return rows, False
    return rows[:limit], len(rows) > limit


def metrics(session: Session, job: JobModel) -> list[MetricModel]:
    return list(
        session.exec(
            select(MetricModel)
            .where(MetricModel.job_id == job.id)
            .order_by(col(MetricModel.step), col(MetricModel.id))
        )
    )
