"""Where a new job starts: a base model, an `ft:` model of one of the project's succeeded jobs, or a
checkpoint of one of its jobs (`alignd.init_from_checkpoint`).

Chaining keeps the base and records the way from it to the starting weights as layers
(`contract.InitWeights`): a full fine-tuning result replaces the weights; a LoRA adapter is merged into
them. So a LoRA job started from an `ft:` LoRA model loads the base, merges the parent's adapter (and the
parent's own layers before it) and trains a fresh adapter on top; a full job starts from the merged
weights. For DPO the starting weights are also the reference model: a DPO job on an SFT model is held
close to that SFT model, not to the raw base.

The storage prefixes recorded here are read again when the trainer asks for their files
(`init_files`), after checking that their job still belongs to the running job's project.
"""

import re
from dataclasses import dataclass

from sqlmodel import Session, col, select

from alignd.contract import (
    InitLayer,
    InitWeights,
    JobSpec,
    ModelFile,
    ModelFilesResponse,
    TrainingType,
    WeightsKind,
)
from alignd.contract.types import MAX_STEP
from alignd.errors import InvalidRequest, NotFound
from alignd.jobs.lifecycle import JobStatus
from alignd.jobs.paths import is_confined, job_root
from alignd.models import BaseModelModel, CheckpointModel, JobModel, ProjectModel
from alignd.schemas import JobCreate
from alignd.storage import ObjectStore

FT_PREFIX = "ft:"
CHECKPOINT_SUFFIX = re.compile(r"^(?P<model>ft:.+):ckpt-step-(?P<step>[0-9]{1,10})$")
"""A checkpoint's `fine_tuned_model_checkpoint` name, which OpenAI also accepts as `model`."""
BASE_MODEL_KEY = "base_model"
"""The key in a job's stored `request` naming its base model's id (jobs made before chaining lack it)."""


@dataclass(frozen=True)
class StartPoint:
    base: BaseModelModel
    init: InitWeights | None


def resolve_start(session: Session, project: ProjectModel, request: JobCreate) -> StartPoint:
    """The base model and the weights the job starts from; InvalidRequest naming the field otherwise."""
    checkpoint_id = request.alignd.init_from_checkpoint
    if checkpoint_id is not None:
        return _from_checkpoint(session, project, request.model, checkpoint_id)
    named = CHECKPOINT_SUFFIX.match(request.model)
    if named is not None and int(named["step"]) <= MAX_STEP:
        parent = _tuned_job(session, project, named["model"], shown=request.model)
        checkpoint = session.exec(
            select(CheckpointModel).where(
                CheckpointModel.job_id == parent.id, CheckpointModel.step == int(named["step"])
            )
        ).first()
        if checkpoint is None:
            raise _unknown_model(request.model)
        return _checkpoint_start(session, parent, checkpoint, source=request.model)
    if request.model.startswith(FT_PREFIX):
        parent = _tuned_job(session, project, request.model, shown=request.model)
        layers = [*parent_layers(parent), _final_layer(parent)]
        return StartPoint(
            _base_of(session, parent), InitWeights(source=request.model, layers=_collapse(layers))
        )
    base = session.get(BaseModelModel, request.model)
    if base is None:
        raise _unknown_model(request.model)
    return StartPoint(base, None)


def base_model_id(job: JobModel) -> str:
    """The id of the base model under a job: its `model`, unless that names an `ft:` model or checkpoint."""
    return str(job.request.get(BASE_MODEL_KEY) or job.model)


def weights_layers(job: JobModel) -> list[InitLayer]:
    """A succeeded job's trained weights as layers over its base: what loading its `ft:` model takes."""
    return _collapse([*parent_layers(job), _final_layer(job)])


def parent_layers(job: JobModel) -> list[InitLayer]:
    init = JobSpec.model_validate(job.spec).init
    return list(init.layers) if init is not None else []


def _final_layer(job: JobModel) -> InitLayer:
    if JobSpec.model_validate(job.spec).training_type is TrainingType.full:
        return InitLayer(kind=WeightsKind.full, location=f"{job_root(job.id)}model")
    return InitLayer(kind=WeightsKind.adapter, location=f"{job_root(job.id)}adapter")


def _collapse(layers: list[InitLayer]) -> list[InitLayer]:
    """Full weights replace whatever came before them, so the layers start at the last full one."""
    last_full = max((i for i, layer in enumerate(layers) if layer.kind is WeightsKind.full), default=0)
    return layers[last_full:]


def _tuned_job(session: Session, project: ProjectModel, name: str, *, shown: str) -> JobModel:
    job = session.exec(
        select(JobModel).where(col(JobModel.project_id) == project.id, col(JobModel.fine_tuned_model) == name)
    ).first()
    if job is None:
        raise _unknown_model(shown)
    if job.status is not JobStatus.succeeded:  # fine_tuned_model is set on success; defensive
        raise InvalidRequest(
            f"model {shown!r} belongs to job {job.id}, which has status {job.status}; only a succeeded "
            "job's model can be trained further",
            param="model",
            code="model_not_ready",
        )
    return job


def _from_checkpoint(session: Session, project: ProjectModel, model: str, checkpoint_id: str) -> StartPoint:
    param = "alignd.init_from_checkpoint"
    checkpoint = session.get(CheckpointModel, checkpoint_id)
    job = session.get(JobModel, checkpoint.job_id) if checkpoint is not None else None
    if checkpoint is None or job is None or job.project_id != project.id:
        raise InvalidRequest(
            f"no checkpoint with id {checkpoint_id!r} in this project; "
            "GET /v1/fine_tuning/jobs/{job_id}/checkpoints lists a job's checkpoints",
            param=param,
            code="checkpoint_not_found",
        )
    allowed = {base_model_id(job), job.model, job.fine_tuned_model}
    if model not in allowed:
        raise InvalidRequest(
            f"checkpoint {checkpoint_id} is of job {job.id}, trained on base model {base_model_id(job)!r}; "
            f"set model to {base_model_id(job)!r} (got {model!r})",
            param="model",
            code="model_mismatch",
        )
    return _checkpoint_start(session, job, checkpoint, source=checkpoint_id)


def _checkpoint_start(
    session: Session, job: JobModel, checkpoint: CheckpointModel, *, source: str
) -> StartPoint:
    if not is_confined(job.id, checkpoint.storage_prefix):
        raise InvalidRequest(
            f"checkpoint {checkpoint.id} was stored outside its job's storage and cannot be used",
            param="alignd.init_from_checkpoint",
            code="checkpoint_not_usable",
        )
    spec = JobSpec.model_validate(job.spec)
    root = checkpoint.storage_prefix.rstrip("/")
    if spec.training_type is TrainingType.full:
        layer = InitLayer(kind=WeightsKind.full, location=f"{root}/model")
    else:
        layer = InitLayer(kind=WeightsKind.adapter, location=f"{root}/adapter")
    layers = _collapse([*parent_layers(job), layer])
    return StartPoint(_base_of(session, job), InitWeights(source=source, layers=layers))


def _base_of(session: Session, job: JobModel) -> BaseModelModel:
    base = session.get(BaseModelModel, base_model_id(job))
    if base is None:
        raise InvalidRequest(
            f"the base model {base_model_id(job)!r} of job {job.id} is no longer registered; register it "
            "again (POST /v1/models) to train on this job's weights",
            param="model",
            code="model_not_found",
        )
    return base


def _unknown_model(model: str) -> InvalidRequest:
    return InvalidRequest(
        f"unknown model {model!r}; GET /v1/models lists the base models and this project's fine-tuned "
        "models (ft:...), and a job's checkpoints list their fine_tuned_model_checkpoint names",
        param="model",
        code="model_not_found",
    )


def init_files(
    session: Session, store: ObjectStore, job: JobModel, index: int, *, expires_seconds: int
) -> ModelFilesResponse:
    """Presigned GET URLs for the files of layer `index` of a running job's starting weights."""
    prefix = _layer_prefix(session, job, index)
    root = prefix.rstrip("/") + "/"
    files = [
        ModelFile(
            path=key[len(root) :], url=store.presigned_get_url(key, expires_seconds), size=store.size(key)
        )
        for key in store.list(root)
    ]
    if not files:
        raise NotFound(f"the weights of layer {index} ({prefix}) are gone from storage", param="layer")
    return ModelFilesResponse(location=prefix, files=files)


def _layer_prefix(session: Session, job: JobModel, index: int) -> str:
    """The storage prefix of layer `index`, after checking that the job the layer comes from is in the
    same project. NotFound when there is no such layer."""
    init = JobSpec.model_validate(job.spec).init
    if init is None or not 0 <= index < len(init.layers):
        raise NotFound(f"job {job.id} has no starting-weights layer {index}", param="layer")
    location = init.layers[index].location
    parts = location.split("/")
    source = session.get(JobModel, parts[1]) if len(parts) > 2 and parts[0] == "jobs" else None
    if source is None or source.project_id != job.project_id or not is_confined(source.id, location):
        raise NotFound(f"layer {index} of job {job.id} names weights this job cannot read", param="layer")
    return location
