"""What a chat request's `model` names: a registered base model, or one of the project's fine-tuned
models (its base plus the job's trained weights in the object store)."""

from dataclasses import dataclass

from sqlmodel import Session, col, select

from alignd.contract import JobSpec, TrainingType
from alignd.errors import NotFound
from alignd.jobs.lifecycle import JobStatus
from alignd.models import BaseModelModel, JobModel


@dataclass(frozen=True)
class ChatModelSource:
    model_id: str
    """The id the caller asked for; echoed in the response."""
    cache_key: str
    """One loaded model per key: `base:<location>` or the job id."""
    base_location: str
    """What the base loads from: a directory, an s3:// prefix or a hub id."""
    job_id: str | None = None
    """The fine-tuning job whose trained weights go on top of the base; None for a base model."""
    full_weights: bool = False
    """The job trained all weights: they replace the base instead of adapting it."""


def model_not_found(model_id: str) -> NotFound:
    """OpenAI's answer for a model the caller cannot use, with its code."""
    return NotFound(
        f"The model `{model_id}` does not exist or you do not have access to it; GET /v1/models lists "
        "the models this key can use",
        param="model",
        code="model_not_found",
    )


def find_source(session: Session, project_id: str, model_id: str) -> ChatModelSource:
    """A registered base model, else a succeeded job of this project whose fine_tuned_model is the id."""
    base = session.get(BaseModelModel, model_id)
    if base is not None:
        return ChatModelSource(
            model_id=model_id, cache_key=f"base:{base.location}", base_location=base.location
        )
    job = session.exec(
        select(JobModel).where(
            col(JobModel.project_id) == project_id, col(JobModel.fine_tuned_model) == model_id
        )
    ).first()
    if job is None or JobStatus(job.status) is not JobStatus.succeeded:
        raise model_not_found(model_id)
    spec = JobSpec.model_validate(job.spec)
    return ChatModelSource(
        model_id=model_id,
        cache_key=job.id,
        base_location=spec.model,
        job_id=job.id,
        full_weights=spec.training_type is TrainingType.full,
    )
