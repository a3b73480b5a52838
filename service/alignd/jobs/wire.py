"""The one producer of job wire objects (STYLE rule 16): the routes, the status fast path and anything
else that answers with a `fine_tuning.job` or its events and checkpoints build them here."""

from pydantic import TypeAdapter

from alignd.contract import TrainingMethod
from alignd.models import CheckpointModel, JobEventModel, JobModel
from alignd.schemas import (
    CheckpointMetrics,
    CheckpointObject,
    DpoHyperparametersOut,
    DpoMethodOut,
    Integration,
    JobAligndInfo,
    JobError,
    JobEventObject,
    JobObject,
    MethodOut,
    SupervisedHyperparametersOut,
    SupervisedMethodOut,
    WandbIntegration,
)

INTEGRATION: TypeAdapter[Integration] = TypeAdapter(Integration)


def method_object(job: JobModel) -> tuple[MethodOut, DpoHyperparametersOut | SupervisedHyperparametersOut]:
    """OpenAI's `method` and its hyperparameters, from the frozen spec (jobs made before SFT have no
    `method` there: they are DPO)."""
    if job.spec.get("method", TrainingMethod.dpo) == TrainingMethod.supervised:
        supervised = SupervisedHyperparametersOut.model_validate(job.request)
        method = MethodOut(type="supervised", supervised=SupervisedMethodOut(hyperparameters=supervised))
        return method, supervised
    dpo = DpoHyperparametersOut.model_validate(job.request)
    return MethodOut(dpo=DpoMethodOut(hyperparameters=dpo)), dpo


def job_object(job: JobModel) -> JobObject:
    method, hyperparameters = method_object(job)
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
        status=job.status.wire,
        trained_tokens=job.trained_tokens,
        training_file=job.training_file,
        validation_file=job.validation_file,
        estimated_finish=job.estimated_finish,
        integrations=wandb or None,
        metadata=job.job_metadata,
        method=method,
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


def event_object(event: JobEventModel) -> JobEventObject:
    return JobEventObject(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type="metrics" if event.type == "metrics" else "message",
        data=event.data,
    )


def checkpoint_object(job: JobModel, checkpoint: CheckpointModel) -> CheckpointObject:
    return CheckpointObject(
        id=checkpoint.id,
        created_at=checkpoint.created_at,
        fine_tuning_job_id=job.id,
        step_number=checkpoint.step,
        fine_tuned_model_checkpoint=f"{job.fine_tuned_model or job.id}:ckpt-step-{checkpoint.step}",
        metrics=CheckpointMetrics(
            step=checkpoint.step,
            train_loss=checkpoint.metrics.get("loss"),
            valid_loss=checkpoint.metrics.get("eval_loss"),
        ),
    )
