"""What the trainer reports: events, metric points, checkpoints, and how it ended.

The same payloads go to stdout as JSON lines (offline) and, batched, to the control plane's
internal endpoint (managed runs). Metric names are TRL's so existing dashboards carry over.
"""

import time
from enum import IntEnum, StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alignd.contract.types import MAX_STEP, MAX_TIMESTAMP, Flag, Int, Number


class ExitCode(IntEnum):
    """The trainer's exit codes; the Kubernetes launcher fails fast on the not-retriable ones."""

    SUCCESS = 0
    INTERNAL = 1
    """An unexpected error in the trainer itself (retriable: it may be transient)."""
    BAD_INPUT = 65
    """The spec, the data or the base model is unusable; retrying cannot help."""
    OUT_OF_MEMORY = 66
    """The device ran out of memory at this batch size / max_length; not retriable as is."""
    INFRASTRUCTURE = 75
    """Storage, network or control-plane failure; retry (resumes from the last checkpoint)."""
    TERMINATED = 143
    """Stopped by SIGTERM (cancel, pause, preemption) after saving a checkpoint."""

    @property
    def retriable(self) -> bool:
        return self in (ExitCode.INTERNAL, ExitCode.INFRASTRUCTURE, ExitCode.TERMINATED)


class EventLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainerEvent(_Payload):
    kind: Literal["event"] = "event"
    type: str = Field("message", description="message | status | warning | checkpoint | done")
    level: EventLevel = EventLevel.info
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: Number = Field(default_factory=time.time, ge=0, le=MAX_TIMESTAMP)


class MetricPoint(_Payload):
    kind: Literal["metrics"] = "metrics"
    step: Int = Field(..., ge=0, le=MAX_STEP)
    split: Literal["train", "eval"] = "train"
    epoch: Number = Field(0.0, ge=0)
    values: dict[str, Number]
    created_at: Number = Field(default_factory=time.time, ge=0, le=MAX_TIMESTAMP)


class CheckpointReport(_Payload):
    kind: Literal["checkpoint"] = "checkpoint"
    step: Int = Field(..., ge=0, le=MAX_STEP)
    path: str
    metrics: dict[str, Number] = Field(default_factory=dict)
    final: Flag = False
    created_at: Number = Field(default_factory=time.time, ge=0, le=MAX_TIMESTAMP)


class ReportBatch(_Payload):
    """One POST to `/internal/v1/jobs/{id}/report`; an empty batch is a heartbeat."""

    events: list[TrainerEvent] = Field(default_factory=list)
    metrics: list[MetricPoint] = Field(default_factory=list)
    checkpoints: list[CheckpointReport] = Field(default_factory=list)


class TerminationSummary(_Payload):
    """The one JSON line written to /dev/termination-log (Kubernetes shows it on the pod)."""

    exit_code: int
    reason: str
    message: str = Field(..., max_length=3000)
    step: int = 0


class UploadUrlsRequest(_Payload):
    """The trainer asks where to PUT the files of one artifact (a checkpoint, the final weights, or a
    LoRA run's merged model)."""

    artifact: str = Field(..., pattern=r"^(adapter|model|merged|checkpoints/step-[0-9]{8})$")
    files: list[str] = Field(..., min_length=1, max_length=256)


class UploadUrlsResponse(_Payload):
    urls: dict[str, str]
    """File path (relative to the artifact) -> presigned PUT URL."""
    prefix: str
    """Where the artifact lives in the store; reported back in CheckpointReport.path."""


class ModelFile(_Payload):
    path: str = Field(..., min_length=1)
    """Relative to the model's root, '/'-separated (e.g. `config.json`, `tokenizer/vocab.json`)."""
    url: str
    """A presigned GET URL."""
    size: int = Field(..., ge=0)
    etag: str = ""
    """Changes when the object's bytes do; part of the trainer's cache key."""


class ModelFilesResponse(_Payload):
    """`GET /internal/v1/jobs/{id}/model_files`: how a trainer downloads a base model kept in object
    storage (`s3://bucket/prefix`), holding no storage credentials."""

    location: str
    files: list[ModelFile]


class ResumeCheckpoint(_Payload):
    """`GET /internal/v1/jobs/{id}/resume`: the job's latest uploaded checkpoint, so a trainer on a fresh
    machine (a new pod after preemption, a retry) continues from it instead of from step 0."""

    step: int | None = None
    """None when the job has no checkpoint yet."""
    files: list[ModelFile] = Field(default_factory=list)
    """Paths relative to the checkpoint directory (`checkpoints/step-NNNNNNNN/`)."""
