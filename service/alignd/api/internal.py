"""Trainer-only endpoints: authenticated by the job's token, valid for that job while it runs."""

from fastapi import APIRouter

from alignd import registry
from alignd.api.responses import errors
from alignd.contract import (
    JobSpec,
    ModelFilesResponse,
    ReportBatch,
    ResumeCheckpoint,
    UploadUrlsRequest,
    UploadUrlsResponse,
)
from alignd.deps import RunningJobDep, SessionDep, StoreDep
from alignd.jobs import artifacts, start
from alignd.jobs.progress import apply_report

router = APIRouter(prefix="/internal/v1/jobs", tags=["internal"])
URL_SECONDS = 24 * 3600


@router.get("/{job_id}/spec", response_model=JobSpec, responses=errors(400, 401))
def spec(job: RunningJobDep, session: SessionDep, store: StoreDep) -> JobSpec:
    """The frozen spec with file ids swapped for presigned URLs the trainer can download."""
    return artifacts.trainer_spec(session, store, job, expires_seconds=URL_SECONDS)


@router.post("/{job_id}/report", responses=errors(400, 401))
def report(batch: ReportBatch, job: RunningJobDep, session: SessionDep) -> dict[str, bool]:
    apply_report(session, job, batch)
    return {"ok": True}


@router.get("/{job_id}/model_files", response_model=ModelFilesResponse, responses=errors(400, 401))
def model_files(job: RunningJobDep, store: StoreDep) -> ModelFilesResponse:
    """Presigned download URLs for every file of the job's base model, when it lives under s3://."""
    return registry.model_files(store, JobSpec.model_validate(job.spec).model, expires_seconds=URL_SECONDS)


@router.get("/{job_id}/init_files", response_model=ModelFilesResponse, responses=errors(400, 401, 404))
def init_files(
    job: RunningJobDep, session: SessionDep, store: StoreDep, layer: int = 0
) -> ModelFilesResponse:
    """Presigned download URLs for one layer of the weights the job starts from (`spec.init.layers`): the
    adapter or full weights of an `ft:` model or a checkpoint of a job in the same project."""
    return start.init_files(session, store, job, layer, expires_seconds=URL_SECONDS)


@router.get("/{job_id}/resume", response_model=ResumeCheckpoint, responses=errors(400, 401))
def resume(job: RunningJobDep, session: SessionDep, store: StoreDep) -> ResumeCheckpoint:
    """Where a trainer on a fresh machine continues from: the job's latest checkpoint, if any."""
    return artifacts.resume_point(session, store, job, expires_seconds=URL_SECONDS)


@router.post("/{job_id}/upload_urls", response_model=UploadUrlsResponse, responses=errors(400, 401))
def upload_urls(
    body: UploadUrlsRequest, job: RunningJobDep, session: SessionDep, store: StoreDep
) -> UploadUrlsResponse:
    """Presigned PUT URLs for one artifact's files, all under the job's own storage prefix."""
    return artifacts.upload_urls(session, store, job, body, expires_seconds=URL_SECONDS)
