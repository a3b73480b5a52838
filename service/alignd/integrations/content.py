"""What an integration receives about a job: params, metric points and the final links. Pure."""

from collections.abc import Iterable
from typing import Any

from alignd.integrations.base import Point
from alignd.jobs.lifecycle import JobStatus
from alignd.models import JobModel, MetricModel

Param = str | int | float | bool | None


def job_params(job: JobModel) -> dict[str, Param]:
    """The job's resolved settings, flat (`hyperparameters.beta`, `lora.r`, ...), as the trainer got them."""
    spec = job.spec
    params: dict[str, Param] = {
        "job_id": job.id,
        "model": job.model,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "seed": job.seed,
        "suffix": job.suffix,
    }
    params["method"] = spec.get("method", "dpo")
    params["init"] = (spec.get("init") or {}).get("source")  # the ft: model or checkpoint it started from
    for key in ("training_type", "precision", "max_runtime_seconds", "agreement_threshold"):
        params[key] = spec.get(key)
    for group in ("hyperparameters", "lora", "resources"):
        params.update(_flat(group, spec.get(group) or {}))
    return params


def _flat(prefix: str, value: Any) -> dict[str, Param]:
    if isinstance(value, dict):
        out: dict[str, Param] = {}
        for key, item in value.items():
            out.update(_flat(f"{prefix}.{key}", item))
        return out
    if isinstance(value, list):
        return {prefix: ",".join(str(item) for item in value)}
    return {prefix: value}


def job_tags(job: JobModel) -> list[str]:
    """Tags every run gets, like OpenAI's `openai/finetune`, `openai/{model}`, `openai/{job id}`."""
    return ["alignd/finetune", f"alignd/{job.model}"[:64], f"alignd/{job.id}"]


def points(rows: Iterable[MetricModel]) -> list[Point]:
    return [
        Point(step=r.step, split=r.split, epoch=r.epoch, values=dict(r.values), created_at=r.created_at)
        for r in rows
    ]


def links(job: JobModel, public_url: str) -> dict[str, str]:
    """Where the job's results are: its API object, and for a success the model id and adapter download."""
    base = f"{public_url}/v1/fine_tuning/jobs/{job.id}"
    out = {"alignd_job_url": base}
    if job.status is JobStatus.succeeded:
        out["adapter_url"] = f"{base}/artifacts/adapter"
        if job.fine_tuned_model:
            out["fine_tuned_model"] = job.fine_tuned_model
    return out
