"""Turning a job request into the frozen JobSpec: "auto" resolved to documented defaults.

Pure: the caller looks up the model location and the file's row count. What is decided here is
stored with the job and is exactly what the trainer receives.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from alignd.contract import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_SFT_LEARNING_RATE,
    InitWeights,
    JobSpec,
    TrainingMethod,
    TrainingType,
)
from alignd.errors import InvalidRequest
from alignd.schemas import (
    AligndJobOptions,
    DpoHyperparametersIn,
    DpoHyperparametersOut,
    JobCreate,
    SupervisedHyperparametersIn,
    SupervisedHyperparametersOut,
)

AUTO_BETA = 0.1
AUTO_BATCH_SIZE = 8
AUTO_LEARNING_RATE_MULTIPLIER = 1.0


def auto_epochs(rows: int) -> int:
    """Small datasets get more passes: 3 below 1,000 pairs, 2 below 10,000, else 1."""
    if rows < 1_000:
        return 3
    return 2 if rows < 10_000 else 1


def auto_batch_size(rows: int) -> int:
    return max(1, min(AUTO_BATCH_SIZE, rows))


@dataclass(frozen=True)
class ResolvedJob:
    spec: JobSpec
    hyperparameters: DpoHyperparametersOut | SupervisedHyperparametersOut


def training_method(request: JobCreate) -> TrainingMethod:
    """DPO unless `method.type` says "supervised"; reinforcement is refused."""
    method = request.method
    if method is None:
        return TrainingMethod.dpo
    if method.type == "reinforcement":
        raise InvalidRequest(
            "method.type 'reinforcement' is not supported: alignd trains 'dpo' and 'supervised'",
            param="method.type",
        )
    other = method.supervised if method.type == "dpo" else method.dpo
    if other is not None:
        wrong = "supervised" if method.type == "dpo" else "dpo"
        raise InvalidRequest(
            f"method.{wrong} is set but method.type is {method.type!r}; put the hyperparameters under "
            f"method.{method.type}",
            param=f"method.{wrong}",
        )
    return TrainingMethod(method.type)


def supervised_hyperparameters(request: JobCreate) -> SupervisedHyperparametersIn:
    method = request.method
    if method is not None and method.supervised is not None:
        return method.supervised.hyperparameters
    if request.hyperparameters:  # OpenAI's deprecated top-level form, which was supervised's
        try:
            return SupervisedHyperparametersIn.model_validate(request.hyperparameters)
        except ValidationError as exc:
            raise _invalid(exc, prefix="hyperparameters") from None
    return SupervisedHyperparametersIn()


def dpo_hyperparameters(request: JobCreate) -> DpoHyperparametersIn:
    method = request.method
    if method is not None and method.dpo is not None:
        return method.dpo.hyperparameters
    if request.hyperparameters:
        try:
            return DpoHyperparametersIn.model_validate(request.hyperparameters)
        except ValidationError as exc:
            raise _invalid(exc, prefix="hyperparameters") from None
    return DpoHyperparametersIn()


def merged_weights(options: AligndJobOptions) -> bool:
    """Whether the trainer stores a merged copy: by default for LoRA; never for full fine-tuning, whose
    weights are full already. Asking for one there is refused rather than silently dropped."""
    if options.training_type is TrainingType.lora:
        return options.merged_weights is not False
    if options.merged_weights:
        raise InvalidRequest(
            "alignd.merged_weights applies to LoRA jobs only: full fine-tuning already yields full weights, "
            "served at artifacts/adapter; drop alignd.merged_weights or use training_type 'lora'",
            param="alignd.merged_weights",
        )
    return False


def resolve_job(
    request: JobCreate,
    *,
    job_id: str,
    model_location: str,
    training_rows: int,
    output_dir: str = "output",
    init: InitWeights | None = None,
) -> ResolvedJob:
    method = training_method(request)
    given: DpoHyperparametersIn | SupervisedHyperparametersIn
    options = request.alignd
    common = {}
    if method is TrainingMethod.supervised:
        given = supervised_hyperparameters(request)
        defaults = DEFAULT_SFT_LEARNING_RATE
    else:
        given = dpo_hyperparameters(request)
        defaults = DEFAULT_LEARNING_RATE
        common["beta"] = AUTO_BETA if given.beta == "auto" else given.beta
    common |= {
        "batch_size": auto_batch_size(training_rows) if given.batch_size == "auto" else given.batch_size,
        "learning_rate_multiplier": AUTO_LEARNING_RATE_MULTIPLIER
        if given.learning_rate_multiplier == "auto"
        else given.learning_rate_multiplier,
        "n_epochs": auto_epochs(training_rows) if given.n_epochs == "auto" else given.n_epochs,
    }
    out: DpoHyperparametersOut | SupervisedHyperparametersOut = (
        SupervisedHyperparametersOut.model_validate(common)
        if method is TrainingMethod.supervised
        else DpoHyperparametersOut.model_validate(common)
    )
    learning_rate = given.learning_rate or out.learning_rate_multiplier * defaults[options.training_type]
    extensions = given.model_dump(
        exclude={"beta", "batch_size", "learning_rate_multiplier", "n_epochs", "learning_rate"},
        exclude_none=True,
    )
    raw: dict[str, Any] = {
        "job_id": job_id,
        "method": method,
        "init": init,
        "model": model_location,
        "training_file": request.training_file,
        "validation_file": request.validation_file,
        "output_dir": output_dir,
        "seed": request.seed if request.seed is not None else 42,
        "training_type": options.training_type,
        "lora": options.lora,
        "precision": options.precision,
        "resources": options.resources,
        "max_runtime_seconds": options.max_runtime_seconds,
        "agreement_threshold": options.agreement_threshold,
        "merged_weights": merged_weights(options),
        "hyperparameters": extensions
        | {key: value for key, value in common.items() if key != "learning_rate_multiplier"}
        | {"learning_rate": learning_rate},
    }
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, method=method) from None
    return ResolvedJob(spec=spec, hyperparameters=out)


WIRE_NAMES = {
    "hyperparameters": "method.dpo.hyperparameters",
    "lora": "alignd.lora",
    "resources": "alignd.resources",
    "precision": "alignd.precision",
    "training_type": "alignd.training_type",
    "max_runtime_seconds": "alignd.max_runtime_seconds",
    "agreement_threshold": "alignd.agreement_threshold",
    "merged_weights": "alignd.merged_weights",
}


def _invalid(
    exc: ValidationError, prefix: str | None = None, method: TrainingMethod = TrainingMethod.dpo
) -> InvalidRequest:
    """The first validation error, named by the request field the user wrote."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    names = WIRE_NAMES | {"hyperparameters": f"method.{method}.hyperparameters"}
    head = f"{prefix}.{loc[0]}" if prefix else names.get(loc[0], loc[0])
    param = ".".join([head, *loc[1:]])
    return InvalidRequest(f"invalid {param}: {first['msg']}", param=param)
