"""The fine-tuning job routes: OpenAI's `/v1/fine_tuning/jobs` (create, list, retrieve, cancel, events,
checkpoints) and alignd's pause, resume, metrics and artifacts. Thin: each route parses, asks a function
of `alignd.jobs`, and answers through `alignd.jobs.wire`. `GET /{job_id}` is also answered, for keys in
the caller cache, by `alignd.api.fast_path`, with this route's parser, read and serializer."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from alignd.api.responses import PROJECT, binary, errors
from alignd.deps import ProjectDep, SessionDep, SettingsDep, StateDep, StoreDep
from alignd.estimates import service as estimates
from alignd.estimates.wire import JobEstimate
from alignd.jobs import artifacts, service
from alignd.jobs.wire import checkpoint_object, event_object, job_object
from alignd.schemas import (
    CheckpointObject,
    JobCreate,
    JobEventObject,
    JobObject,
    ListResponse,
    MetricPointOut,
    MetricsResponse,
)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Limit = Annotated[int, Query(ge=1, le=100)]

CREATED: dict[int | str, dict[str, object]] = {
    200: {"description": "The job; with `alignd.dry_run: true`, its estimate instead, and no job is created."}
}
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


@router.post(
    "",
    response_model=JobObject | JobEstimate,
    responses=CREATED | errors(400, *PROJECT, 429, 501),
)
def create(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    state: StateDep,
    project: ProjectDep,
    background: BackgroundTasks,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JobObject | JobEstimate:
    if body.alignd.dry_run:
        return estimate(body, session, settings, store, project)
    job = service.create_job(
        session=session, settings=settings, project=project, request=body, idempotency_key=idempotency_key
    )
    background.add_task(
        estimates.analyse_created_job, sessions=state.sessions, settings=settings, store=store, job_id=job.id
    )
    return job_object(job)


@router.post("/estimate", response_model=JobEstimate, responses=errors(400, *PROJECT, 501))
def estimate(
    body: JobCreate, session: SessionDep, settings: SettingsDep, store: StoreDep, project: ProjectDep
) -> JobEstimate:
    """What the job would do, before it runs: pairs, tokens, steps, truncation, train/validation overlap
    and durations per GPU profile. The body is job creation's, checked the same way (the same 400s); no
    job is created and nothing is launched. Needs the trainer extra on the server (501 without)."""
    return estimates.estimate_job(
        session=session, settings=settings, store=store, project=project, request=body
    )


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
    data = [job_object(r) for r in rows]
    return ListResponse[JobObject].page(data, has_more)


@router.get("/{job_id}", response_model=JobObject, responses=errors(*PROJECT))
async def retrieve(job_id: str, state: StateDep, project: ProjectDep) -> JobObject:
    # The hot path of clients polling a job: `async`, with one explicit trip to the thread pool for the
    # read. A plain `def` route costs three (the route, its response validation, closing its session).
    return job_object(await run_in_threadpool(service.read_job, state.engine, project, job_id))


@router.post("/{job_id}/cancel", response_model=JobObject, responses=errors(*PROJECT, 409))
def cancel(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return job_object(service.cancel_job(session, project, job_id))


@router.post("/{job_id}/pause", response_model=JobObject, responses=errors(*PROJECT, 409))
def pause(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return job_object(service.pause_job(session, project, job_id))


@router.post("/{job_id}/resume", response_model=JobObject, responses=errors(*PROJECT, 409))
def resume(job_id: str, session: SessionDep, project: ProjectDep) -> JobObject:
    return job_object(service.resume_job(session, project, job_id))


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
            f"data: {event_object(e).model_dump_json()}\n\n"
            for e in service.follow_events(state.sessions, job.id)
        )
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    rows, has_more = service.list_events(session, project, job_id, after=after, limit=limit)
    data = [event_object(r) for r in rows]
    return ListResponse[JobEventObject].page(data, has_more)


@router.get(
    "/{job_id}/checkpoints", response_model=ListResponse[CheckpointObject], responses=errors(400, *PROJECT)
)
def list_checkpoints(
    job_id: str, session: SessionDep, project: ProjectDep, after: str | None = None, limit: Limit = 10
) -> ListResponse[CheckpointObject]:
    job = service.get_job(session, project, job_id)
    rows, has_more = artifacts.checkpoints(session, job, after=after, limit=limit)
    data = [checkpoint_object(job, c) for c in rows]
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
        headers={"Content-Disposition": f'attachment; filename="{job.id}-merged.tar.gz"'},
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
