"""Wire shapes: OpenAI-compatible request and response models, plus alignd's extensions.

Field names are OpenAI's so the official SDK parses every response; alignd adds fields (the
`alignd` objects, extra hyperparameters) and never renames theirs. Response models are never
table classes, so internal columns and secrets cannot leak.
"""

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alignd.contract import (
    LoraSpec,
    LossType,
    LRScheduler,
    Precision,
    Resources,
    TrainingType,
    TruncationMode,
)
from alignd.contract.types import Flag, Int, Number
from alignd.evals.schemas import InputMessagesTemplate, SamplingParams, check_metadata
from alignd.jobs.lifecycle import WireStatus
from alignd.webhooks.events import EventType as WebhookEventType

T = TypeVar("T")
Auto = Literal["auto"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, data: list[T], has_more: bool = False) -> "ListResponse[T]":
        """A page with OpenAI's cursor fields taken from the first and last item's id."""
        ids = [getattr(item, "id", None) for item in (data[0], data[-1])] if data else [None, None]
        return cls(data=data, has_more=has_more, first_id=ids[0], last_id=ids[1])


# ---- files ---------------------------------------------------------------------------------------------


class FileAligndInfo(BaseModel):
    format: str
    rows: int
    sha256: str
    purpose: str = "fine-tune"
    """The purpose as alignd stores it: `evals` where the SDK-facing `purpose` says "user_data"."""


class FileObject(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "file-9f1c2e7a4b3d8e6f0a1b2c3d",
                    "object": "file",
                    "bytes": 1048576,
                    "created_at": 1750000000,
                    "filename": "preferences.jsonl",
                    "purpose": "fine-tune",
                    "status": "processed",
                    "status_details": None,
                    "expires_at": None,
                    "alignd": {
                        "format": "openai",
                        "rows": 2000,
                        "sha256": "3b0c44298fc1c149afbf4c8996fb9242",
                    },
                }
            ]
        }
    )

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["fine-tune", "fine-tune-results", "user_data"] = "fine-tune"
    """fine-tune: uploaded preference data; fine-tune-results: a succeeded job's metrics CSV."""
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    alignd: FileAligndInfo


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# ---- jobs ----------------------------------------------------------------------------------------------


class _TrainingHyperparametersIn(_Request):
    """What every method takes: OpenAI's three ("auto" allowed) and alignd's training-loop extensions."""

    batch_size: Int | Auto = "auto"
    learning_rate_multiplier: Number | Auto = "auto"
    n_epochs: Int | Auto = "auto"
    learning_rate: Number | None = None
    warmup_ratio: Number | None = None
    lr_scheduler: LRScheduler | None = None
    weight_decay: Number | None = None
    max_grad_norm: Number | None = None
    gradient_accumulation_steps: Int | None = None
    max_length: Int | None = None
    truncation_mode: TruncationMode | None = None
    eval_steps: Int | None = None
    save_steps: Int | None = None
    gradient_checkpointing: Flag | None = None
    max_steps: Int | None = None


class DpoHyperparametersIn(_TrainingHyperparametersIn):
    """OpenAI's DPO hyperparameters ("auto" allowed) plus alignd's extensions (DESIGN.md section 6)."""

    beta: Number | Auto = "auto"
    loss_type: LossType | list[LossType] | None = None
    loss_weights: list[Number] | None = None
    label_smoothing: Number | None = None
    precompute_ref_log_probs: Flag | None = None


class DpoMethodIn(_Request):
    hyperparameters: DpoHyperparametersIn = Field(default_factory=DpoHyperparametersIn)


class SupervisedHyperparametersIn(_TrainingHyperparametersIn):
    """OpenAI's supervised hyperparameters ("auto" allowed) plus the extensions that apply to SFT (the
    DPO-only ones, such as beta and loss_type, are refused)."""


class SupervisedMethodIn(_Request):
    hyperparameters: SupervisedHyperparametersIn = Field(default_factory=SupervisedHyperparametersIn)


class MethodIn(_Request):
    type: Literal["dpo", "supervised", "reinforcement"]
    dpo: DpoMethodIn | None = None
    supervised: SupervisedMethodIn | None = None
    reinforcement: dict[str, Any] | None = None


class AfterTrainingEval(_Request):
    """An eval to run when the job succeeds, with the prompt template and sampling of its runs (as in a
    completions run). Without `input_messages` its runs generate nothing: for evals whose graders read
    no sample, such as `preference`."""

    eval_id: str = Field(..., min_length=1, max_length=64)
    input_messages: InputMessagesTemplate | None = None
    sampling_params: SamplingParams | None = None


class AligndJobOptions(_Request):
    training_type: TrainingType = TrainingType.lora
    lora: LoraSpec = Field(default_factory=LoraSpec)
    precision: Precision = Precision.auto
    resources: Resources = Field(default_factory=Resources)
    max_runtime_seconds: Int | None = Field(None, ge=1)
    priority: Int = Field(0, ge=-100, le=100, description="Higher runs first among queued jobs.")
    agreement_threshold: Number | None = Field(None, ge=0, le=1)
    init_from_checkpoint: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Start from this checkpoint (`ftckpt-...`, from GET .../checkpoints) of one of the "
        "project's jobs instead of from the model's weights; `model` must name that job's base model or "
        "`model`.",
    )
    merged_weights: Flag | None = Field(
        None,
        description="LoRA jobs: also store the base model with the adapter merged into it, served at "
        "`artifacts/merged` (default true; set false for big models, whose merged copy is as large as "
        "the base). Full fine-tuning already yields full weights (`artifacts/adapter`); true is refused "
        "there.",
    )
    dry_run: Flag | None = Field(
        None,
        description="true: create nothing and answer with the job's estimate (fine_tuning.job.estimate), as "
        "POST /v1/fine_tuning/jobs/estimate does.",
    )
    evals: list[Annotated[str, Field(min_length=1, max_length=64)] | AfterTrainingEval] = Field(
        default_factory=list,
        max_length=8,
        description="Evals (ids, or objects with the runs' input_messages and sampling_params) to run when "
        "the job succeeds: each gets a run on the fine-tuned model and one on its base model as the "
        "baseline, over the job's validation_file; the job's events link to the runs.",
    )


class WandbOptions(_Request):
    """OpenAI's `wandb` integration settings, echoed as given."""

    project: str = Field(..., min_length=1, max_length=128, description="The W&B project the run goes to.")
    entity: str | None = Field(None, max_length=128, description="Team or user; default the key's own.")
    name: str | None = Field(None, max_length=128, description="The run's display name; default the job id.")
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(None, max_length=50)


class WandbIntegration(_Request):
    type: Literal["wandb"]
    wandb: WandbOptions


class MlflowOptions(_Request):
    """alignd's `mlflow` integration: a run in this experiment of the project's tracking server."""

    experiment_name: str = Field(..., min_length=1, max_length=256)
    run_name: str | None = Field(None, max_length=256, description="Default the job id.")
    tags: dict[Annotated[str, Field(max_length=250)], Annotated[str, Field(max_length=5000)]] | None = Field(
        None, max_length=50
    )


class MlflowIntegration(_Request):
    type: Literal["mlflow"]
    mlflow: MlflowOptions


Integration = Annotated[WandbIntegration | MlflowIntegration, Field(discriminator="type")]
"""One entry of a job's `integrations`: where the control plane also logs the job's params, metric series
and final artifacts' links."""


class JobCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "llama-3.2-1b",
                    "training_file": "file-9f1c2e7a4b3d8e6f0a1b2c3d",
                    "suffix": "support",
                    "metadata": {"team": "support"},
                    "method": {
                        "type": "dpo",
                        "dpo": {
                            "hyperparameters": {
                                "beta": 0.1,
                                "n_epochs": 2,
                                "batch_size": "auto",
                                "loss_type": "sigmoid",
                                "max_length": 2048,
                            }
                        },
                    },
                    "alignd": {
                        "training_type": "lora",
                        "lora": {"r": 16, "alpha": 32},
                        "resources": {"gpus": 1},
                    },
                }
            ]
        },
    )

    model: str = Field(..., min_length=1, max_length=256)
    training_file: str = Field(..., min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    method: MethodIn | None = None
    hyperparameters: dict[str, Any] | None = Field(None, description="Deprecated by OpenAI; use method.")
    suffix: str | None = Field(None, max_length=64, pattern=r"^[a-zA-Z0-9_-]*$")
    seed: Int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[Integration] | None = Field(None, max_length=4)
    alignd: AligndJobOptions = Field(default_factory=AligndJobOptions)

    _metadata = field_validator("metadata")(check_metadata)


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class DpoHyperparametersOut(BaseModel):
    beta: float
    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int


class SupervisedHyperparametersOut(BaseModel):
    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int


class DpoMethodOut(BaseModel):
    hyperparameters: DpoHyperparametersOut


class SupervisedMethodOut(BaseModel):
    hyperparameters: SupervisedHyperparametersOut


class MethodOut(BaseModel):
    type: Literal["dpo", "supervised"] = "dpo"
    dpo: DpoMethodOut | None = None
    supervised: SupervisedMethodOut | None = None


class JobAligndInfo(BaseModel):
    training_type: TrainingType
    spec: dict[str, Any]
    """The resolved, frozen spec the trainer receives (contract.JobSpec)."""
    step: int | None = None
    total_steps: int | None = None
    attempt: int = 0
    priority: int = 0
    status: str
    """alignd's own status, which adds pausing and paused to OpenAI's six."""
    integrations: list[Integration] = Field(default_factory=list)
    """Every integration the job was created with; OpenAI's `integrations` lists only the W&B ones."""


class JobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: DpoHyperparametersOut | SupervisedHyperparametersOut
    model: str
    """What the job was created with: a base model, or an `ft:` model it continues from."""
    organization_id: str
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: WireStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[WandbIntegration] | None = None
    metadata: dict[str, str] | None = None
    method: MethodOut
    alignd: JobAligndInfo


class JobEventObject(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ftevent-5e8d1c0b9a7f6e5d4c3b2a19",
                    "object": "fine_tuning.job.event",
                    "created_at": 1750000123,
                    "level": "info",
                    "message": "Step 40: training loss=0.5312",
                    "type": "metrics",
                    "data": {
                        "step": 40,
                        "train_loss": 0.5312,
                        "rewards/margins": 0.84,
                        "rewards/accuracies": 0.9,
                    },
                }
            ]
        }
    )

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class CheckpointMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class CheckpointObject(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ftckpt-0a1b2c3d4e5f6a7b8c9d0e1f",
                    "object": "fine_tuning.job.checkpoint",
                    "created_at": 1750000456,
                    "fine_tuned_model_checkpoint": "ft:llama-3.2-1b:proj_1:support:ftjob-1:ckpt-step-200",
                    "fine_tuning_job_id": "ftjob-1",
                    "metrics": {"step": 200, "train_loss": 0.41, "valid_loss": 0.47},
                    "step_number": 200,
                }
            ]
        }
    )

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class MetricPointOut(BaseModel):
    step: int
    split: Literal["train", "eval"]
    epoch: float
    values: dict[str, float]
    created_at: int


class MetricsResponse(BaseModel):
    object: Literal["fine_tuning.job.metrics"] = "fine_tuning.job.metrics"
    job_id: str
    train: list[MetricPointOut]
    eval: list[MetricPointOut]


# ---- models and admin ----------------------------------------------------------------------------------


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelRegister(_Request):
    id: str = Field(..., min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    source: str = Field(..., min_length=1, max_length=1024, description="Directory, s3:// prefix or hub id.")


# ---- chat completions (OpenAI's subset: non-streaming, one choice, text content) ------------------------


class ChatTextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ChatTextPart] = Field(..., description="Text, or a list of text parts.")
    name: str | None = Field(None, description="Accepted for compatibility; not shown to the model.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "model": "ft:smollm2:proj_1:caps:ftjob-1",
                "messages": [{"role": "user", "content": "Name a fruit."}],
                "temperature": 0,
                "max_completion_tokens": 32,
            }
        },
    )

    model: str = Field(..., min_length=1, max_length=512, description="A base model or an ft: model.")
    messages: list[ChatMessageIn] = Field(..., min_length=1, max_length=1024)
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy decoding; default 1.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling; default 1.")
    max_completion_tokens: int | None = Field(
        None, ge=1, description="Most new tokens; default and upper bound: the server's chat_max_tokens."
    )
    max_tokens: int | None = Field(None, ge=1, description="The older name of max_completion_tokens.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Same seed, messages and parameters: the same reply."
    )
    n: int | None = Field(None, ge=1, le=1, description="Only one choice per request.")
    stream: bool | None = Field(None, description="Streaming is not supported: omit it or send false.")
    user: str | None = Field(None, max_length=256)

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("streaming is not supported; omit stream or set it to false")
        return value


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionObject(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ProjectCreate(_Request):
    name: str = Field(..., min_length=1, max_length=128)
    quota_concurrent_jobs: Int | None = Field(None, ge=0, le=2**31 - 1)
    quota_gpus: Int | None = Field(None, ge=0, le=2**31 - 1)
    quota_stored_bytes: Int | None = Field(None, ge=0, le=2**63 - 1)


class ProjectObject(BaseModel):
    id: str
    object: Literal["organization.project"] = "organization.project"
    name: str
    created_at: int


class ApiKeyCreate(_Request):
    name: str = Field("default", min_length=1, max_length=128)


class ApiKeyObject(BaseModel):
    id: str
    object: Literal["organization.project.api_key"] = "organization.project.api_key"
    name: str
    project_id: str | None
    created_at: int
    redacted_value: str
    value: str | None = Field(None, description="The key itself; returned once, at creation.")
    revoked: bool = False


# ---- webhooks ------------------------------------------------------------------------------------------


class WebhookEndpointCreate(_Request):
    url: str = Field(
        ..., min_length=1, max_length=2048, description="Where events are POSTed (http or https)."
    )
    events: list[WebhookEventType] | None = Field(
        None, description="Event types to receive; all of them when left out."
    )


class WebhookEndpointObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[WebhookEventType]
    created_at: int
    secret: str | None = Field(
        None, description="The signing secret (whsec_...); returned once, at creation. Keep it safe."
    )


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: bool = True


class WebhookAttemptObject(BaseModel):
    attempt: int
    """1 for the first try."""
    created_at: int
    duration_ms: int
    status_code: int | None = None
    """What the endpoint answered; None when no answer came (see `error`)."""
    error: str | None = None


class WebhookDeliveryObject(BaseModel):
    id: str
    object: Literal["webhook_endpoint.delivery"] = "webhook_endpoint.delivery"
    webhook_id: str
    event_id: str
    """The event's id, also the `webhook-id` header of every attempt."""
    event_type: WebhookEventType
    data: dict[str, Any]
    """The event's `data` (the job's id)."""
    status: Literal["pending", "delivered", "failed"]
    attempt_count: int
    next_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: int
    delivered_at: int | None = None
    attempts: list[WebhookAttemptObject]


class WandbCredentials(_Request):
    api_key: str = Field(..., min_length=1, max_length=256, description="A W&B API key; stored sealed.")


class MlflowCredentials(_Request):
    tracking_uri: str = Field(
        ..., min_length=1, max_length=2048, pattern=r"^https?://", description="The tracking server's URL."
    )
    token: str | None = Field(None, max_length=4096, description="Sent as a bearer token; stored sealed.")


class IntegrationCredentialsObject(BaseModel):
    """That a project's credentials for one integration are set; never their values."""

    object: Literal["integration.credentials"] = "integration.credentials"
    type: Literal["wandb", "mlflow"]
    configured: bool
    updated_at: int | None = None
