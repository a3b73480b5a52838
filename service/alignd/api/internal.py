"""Trainer-only endpoints: authenticated by the job's token, valid for that job while it runs."""

from typing import Annotated

from fastapi import APIRouter, Depends

from alignd import auth, registry
from alignd.api.responses import errors
from alignd.contract import (
    JobSpec,
    ModelFilesResponse,
    ReportBatch,
    ResumeCheckpoint,
    UploadUrlsRequest,
    UploadUrlsResponse,
)
from alignd.deps import JobTokenDep, SessionDep, StoreDep
from alignd.errors import InvalidRequest
from alignd.jobs import artifacts
from alignd.jobs.progress import apply_report
from alignd.models import FileModel, JobModel

router = APIRouter(prefix="/internal/v1/jobs", tags=["internal"])
URL_SECONDS = 24 * 3600


def running_job(job_id: str, session: SessionDep, token: JobTokenDep) -> JobModel:
    return auth.authenticate_job_token(session, job_id, token)


JobDep = Annotated[JobModel, Depends(running_job)]


@router.get("/{job_id}/spec", response_model=JobSpec, responses=errors(400, 401))
def spec(job: JobDep, session: SessionDep, store: StoreDep) -> JobSpec:
    """The frozen spec with file ids swapped for presigned URLs the trainer can download."""
    frozen = JobSpec.model_validate(job.spec)
    urls = {}
    for name in ("training_file", "validation_file"):
        file_id = getattr(frozen, name)
        if file_id is not None:
            row = session.get(FileModel, file_id)
            if row is None:
                raise InvalidRequest(f"{name} {file_id} was deleted after the job was created", param=name)
            urls[name] = store.presigned_get_url(row.storage_key, URL_SECONDS)
    return frozen.model_copy(update=urls | {"output_dir": "output"})


@router.post("/{job_id}/report", responses=errors(400, 401))
def report(batch: ReportBatch, job: JobDep, session: SessionDep) -> dict[str, bool]:
    apply_report(session, job, batch)
    return {"ok": True}


@router.get("/{job_id}/model_files", response_model=ModelFilesResponse, responses=errors(400, 401))
def model_files(job: JobDep, store: StoreDep) -> ModelFilesResponse:
    """Presigned download URLs for every file of the job's base model, when it lives under s3://."""
    return registry.model_files(store, JobSpec.model_validate(job.spec).model, expires_seconds=URL_SECONDS)


@router.get("/{job_id}/resume", response_model=ResumeCheckpoint, responses=errors(400, 401))
def resume(job: JobDep, session: SessionDep, store: StoreDep) -> ResumeCheckpoint:
    """Where a trainer on a fresh machine continues from: the job's latest checkpoint, if any."""
    return artifacts.resume_point(session, store, job, expires_seconds=URL_SECONDS)


@router.post("/{job_id}/upload_urls", response_model=UploadUrlsResponse, responses=errors(400, 401))
def upload_urls(
    body: UploadUrlsRequest, job: JobDep, session: SessionDep, store: StoreDep
) -> UploadUrlsResponse:
    """Presigned PUT URLs for one artifact's files, all under the job's own storage prefix."""
    return artifacts.upload_urls(session, store, job, body, expires_seconds=URL_SECONDS)
