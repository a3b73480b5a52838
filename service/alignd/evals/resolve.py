"""Which models an eval run names, resolved once at creation and stored on the run (`resolved`), so the
executor launches exactly what was checked.

A run may name: a registered base model (`GET /v1/models`), or an `ft:` model of one of the project's
succeeded fine-tuning jobs (its base plus the job's adapter or weights).
"""

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from alignd.errors import InvalidRequest
from alignd.jobs.lifecycle import JobStatus
from alignd.models import BaseModelModel, JobModel, ProjectModel


class ModelRef(BaseModel):
    """A model as the user named it and what makes it."""

    name: str
    base_model: str
    """The registered base model's id (`BaseModelModel.id`)."""
    job_id: str | None = None
    """For an `ft:` model, the succeeded job whose artifacts turn the base into it."""


class ResolvedRun(BaseModel):
    """What `create_run` checked, for the executor (`EvalRunModel.resolved`)."""

    model: ModelRef | None = None
    """The model under evaluation; None for a jsonl source."""
    judges: dict[str, str] = Field(default_factory=dict)
    """score_model/label_model criterion name -> its judge model, as the judge endpoint (an admin's
    setting: this server's own /v1, vLLM, OpenAI...) names it; not checked against alignd's models."""
    references: dict[str, ModelRef] = Field(default_factory=dict)
    """preference criterion name -> the reference model of its implicit reward margin."""
    file_id: str | None = None
    """The data source file, for a `file_id` source."""
    items: int
    """How many items the data source has."""


def resolve_model(session: Session, project: ProjectModel, name: str, *, param: str) -> ModelRef:
    """A registered base model or an `ft:` model of the project's succeeded jobs; a 400 naming `param`
    otherwise."""
    base = session.get(BaseModelModel, name)
    if base is not None:
        return ModelRef(name=name, base_model=base.id)
    job = session.exec(
        select(JobModel).where(
            col(JobModel.project_id) == project.id,
            col(JobModel.fine_tuned_model) == name,
            col(JobModel.status) == JobStatus.succeeded,
        )
    ).first()
    if job is None:
        raise InvalidRequest(
            f"unknown model {name!r}: use a base model or a fine-tuned model of this project's succeeded "
            "jobs; GET /v1/models lists them",
            param=param,
            code="model_not_found",
        )
    return ModelRef(name=name, base_model=job.model, job_id=job.id)
