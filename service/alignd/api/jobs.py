from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from alignd.api.responses import PROJECT, binary, errors
from alignd.deps import ProjectDep, SessionDep, SettingsDep, StateDep, StoreDep
from alignd.jobs import artifacts, service
from alignd.jobs.state import JobStatus
from alignd.models import JobEventModel, JobModel
from alignd.schemas import (
    CheckpointMetrics,
    CheckpointObject,
    DpoHyperparametersOut,
    DpoMethodOut,
    Integration,
    JobAligndInfo,
    JobCreate,
    JobError,
    JobEventObject,
    JobObject,
    ListResponse,
    MethodOut,
    MetricPointOut,
    MetricsResponse,
    WandbIntegration,
    WireStatus,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=100)]

TAR_GZ = "A gzip'd tar of {root}, streamed."
EVENT_STREAM: dict[int | str, dict[str, object]] = {
    200: {
        "description": "A page of events, newest first; with `stream=true`, server-sent events (one "
        "`data: <fine_tuning.job.event JSON>` frame per event, oldest first) until the job ends.",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One server-sent event; `data` is a fine_tuning.job.event as JSON.",
                    "properties": {
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/JobEventObject"},
                        }
                    },
                    "required": ["data"],
                }
            }
        },
    }
}
WIRE_STATUS: dict[str, WireStatus] = {
    JobStatus.validating_files.value: "validating_files",
    JobStatus.queued.value: "queued",
    JobStatus.running.value: "running",
    JobStatus.pausing.value: "running",
    JobStatus.paused.value: "queued",
    JobStatus.succeeded.value: "succeeded",
    JobStatus.failed.value: "failed",
    JobStatus.cancelled.value: "cancelled",
}
"""The openai SDK's status literal has six values; pausing/paused are reported in `alignd.status`."""
INTEGRATION: TypeAdapter[Integration] = TypeAdapter(Integration)


def to_public(job: JobModel) -> JobObject:
    hyperparameters = DpoHyperparametersOut.model_validate(job.request)
    integrations = [INTEGRATION.validate_python(entry) for entry in job.request.get("integrations", [])]
    wandb = [entry for entry in integrations if isinstance(entry, WandbIntegration)]
    return JobObject(
        id=job.id,
        created_at=job.created_at,
        error=JobError(**job.error) if job.error else None,
        fine_tuned_model=job.fine_tuned_model,
        finished_at=job.finished_at,
        hyperparameters=hyperparameters,
        model=job.model,
        organization_id=job.project_id,
        result_files=job.result_files,
        seed=job.seed,
        status=WIRE_STATUS[job.status],
        trained_tokens=job.trained_tokens,
        training_file=job.training_file,
        validation_file=job.validation_file,
        estimated_finish=job.estimated_finish,
        integrations=wandb or None,
        metadata=job.job_metadata,
        method=MethodOut(dpo=DpoMethodOut(hyperparameters=hyperparameters)),
        alignd=JobAligndInfo(
            training_type=job.spec["training_type"],
            spec=job.spec,
            step=job.step,
            total_steps=job.total_steps,
            attempt=job.attempt,
            priority=job.priority,
            status=job.status,
            integrations=integrations,
        ),
    )


def event_to_public(event: JobEventModel) -> JobEventObject:
    return JobEventObject(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type="metrics" if event.type == "metrics" else "message",
        data=event.data,
    )


@router.post("", response_model=JobObject, responses=errors(400, *PROJECT, 429))
def create(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobObject:
    job = service.create_job(
        session=session, settings=settings, project=project, request=body, idempotency_key=idempotency_key
    )
    return to_public(job)


@router.get("", response_model=ListResponse[JobObject], responses=errors(400, *PROJECT))
def list_jobs(
    request: Request, session: SessionDep, project: ProjectDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[JobObject]:
    metadata = {
        k[len("metadata[") : -1]: v
        for k, v in request.query_params.items()
        if k.startswith("metadata[") and k.endswith("]")
    }
    rows, has_more = service.list_jobs(session, project, after=after, limit=limit, metadata=metadata)
    data = [to_public(r) for r in rows]
    return ListResponse[JobObject].page(data, has_more)


@router.get("/{job_id}", response_model=JobObject, responses=errors(*PROJECT))
async def retrieve(job_id: str, state: StateDep, project: ProjectDep) -> JobObject:
    # The hot path of clients polling a job: `async`, with one explicit trip to the thread pool for the
    # read. A plain `def` route costs three (the route, its response validation, closing its session).
    return to_public(await run_in_threadpool(service.read_job, state.engine, project, job_id))


@router.post("/{job_id}/cancel", response_model=JobObject, responses=errors(*PROJECT, 409))
def cancel(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return to_public(service.cancel_job(session, project, job_id))


@router.post("/{job_id}/pause", response_model=JobObject, responses=errors(*PROJECT, 409))
def pause(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return to_public(service.pause_job(session, project, job_id))


@router.post("/{job_id}/resume", response_model=JobObject, responses=errors(*PROJECT, 409))
def resume(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return to_public(service.resume_job(session, project, job_id))


@router.get(
    "/{job_id}/events",
    response_model=ListResponse[JobEventObject],
    responses=EVENT_STREAM | errors(400, *PROJECT),
)
def events(
    job_id: str,
    session: SessionDep,
    project: ProjectDep,
    state: StateDep,
    after: str | None = None,
    limit: Limit = 20,
    stream: bool = False,
) -> ListResponse[JobEventObject] | StreamingResponse:
    """Newest first, cursor paginated; `stream=true`: server-sent events, oldest first, until the job ends."""
    if stream:
        job = service.get_job(session, project, job_id)
        frames = (
            f"data: {event_to_public(e).model_dump_json()}\n\n"
            for e in service.follow_events(state.sessions, job.id)
        )
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    rows, has_more = service.list_events(session, project, job_id, after=after, limit=limit)
    data = [event_to_public(r) for r in rows]
    return ListResponse[JobEventObject].page(data, has_more)


@router.get(
    "/{job_id}/checkpoints", response_model=ListResponse[CheckpointObject], responses=errors(400, *PROJECT)
)
def list_checkpoints(
    job_id: str, session: SessionDep, project: ProjectDep, after: str | None = None, limit: Limit = 10
) -> ListResponse[CheckpointObject]:
    job = service.get_job(session, project, job_id)
    rows, has_more = artifacts.checkpoints(session, job, after=after, limit=limit)
    data = [
        CheckpointObject(
            id=c.id,
            created_at=c.created_at,
            fine_tuning_job_id=job.id,
            step_number=c.step,
            fine_tuned_model_checkpoint=f"{job.fine_tuned_model or job.id}:ckpt-step-{c.step}",
            metrics=CheckpointMetrics(
                step=c.step, train_loss=c.metrics.get("loss"), valid_loss=c.metrics.get("eval_loss")
            ),
        )
        for c in rows
    ]
    return ListResponse[CheckpointObject].page(data, has_more)


@router.get("/{job_id}/metrics", response_model=MetricsResponse, responses=errors(*PROJECT))
def metrics(job_id: str, session: SessionDep, project: ProjectDep) -> MetricsResponse:
    job = service.get_job(session, project, job_id)
    points = [
        MetricPointOut(
            step=m.step,
            split=m.split,
            epoch=m.epoch,
            values=m.values,
            created_at=m.created_at,
        )
        for m in artifacts.metrics(session, job)
    ]
    return MetricsResponse(
        job_id=job.id,
        train=[p for p in points if p.split == "train"],
        eval=[p for p in points if p.split == "eval"],
    )


@router.get(
    "/{job_id}/artifacts/adapter",
    response_class=StreamingResponse,
    responses=binary("application/gzip", TAR_GZ.format(root="adapter/ (or model/ for full training)"))
    | errors(*PROJECT),
)
def download_adapter(
    job_id: str, session: SessionDep, store: StoreDep, project: ProjectDep
) -> StreamingResponse:
    job = service.get_job(session, project, job_id)
    prefix = artifacts.adapter_prefix(store, job)
    return StreamingResponse(
        artifacts.tar_gz(store, prefix, prefix.rsplit("/", 1)[-1]),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-adapter.tar.gz"'},
    )


@router.get(
    "/{job_id}/artifacts/merged",
    response_class=StreamingResponse,
    responses=binary(
        "application/gzip",
        TAR_GZ.format(root="merged/")
        + " A succeeded LoRA job's base model with its adapter merged in (safetensors, config, "
        "generation config, tokenizer), loadable with AutoModelForCausalLM.from_pretrained. A full "
        "fine-tuning job, one created with alignd.merged_weights false, or one that has not succeeded "
        "gets a 404 saying which.",
    )
    | errors(*PROJECT),
)
def download_merged(
    job_id: str, session: SessionDep, store: StoreDep, project: ProjectDep
) -> StreamingResponse:
    job = service.get_job(session, project, job_id)
    prefix = artifacts.merged_prefix(store, job)
    return StreamingResponse(
        artifacts.tar_gz(store, prefix, artifacts.MERGED),
        media_type="application/gzip",
        headers=_attachment(f"{job.id}-merged.tar.gz"),
    )


@router.get(
    "/{job_id}/artifacts/checkpoint/{step}",
    response_class=StreamingResponse,
    responses=binary("application/gzip", TAR_GZ.format(root="step-<step>/")) | errors(400, *PROJECT),
)
def download_checkpoint(
    job_id: str, step: int, session: SessionDep, store: StoreDep, project: ProjectDep
) -> StreamingResponse:
    job = service.get_job(session, project, job_id)
    prefix = artifacts.checkpoint_prefix(session, job, step)
    return StreamingResponse(
        artifacts.tar_gz(store, prefix, f"step-{step}"),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-step-{step}.tar.gz"'},
    )


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
