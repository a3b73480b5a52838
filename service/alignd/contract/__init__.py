"""The contract shared by the control plane and the trainer: job spec, trainer reports, data rows.

Pydantic and the standard library only, so the trainer image and the API server import the
same definitions without either pulling in the other's dependencies.
"""

from alignd.contract.environment import ATTENTION_ENV, AttentionKernel
from alignd.contract.events import (
    CheckpointReport,
    EventLevel,
    ExitCode,
    MetricPoint,
    ModelFile,
    ModelFilesResponse,
    ReportBatch,
    ResumeCheckpoint,
    TerminationSummary,
    TrainerEvent,
    UploadUrlsRequest,
    UploadUrlsResponse,
)
from alignd.contract.preference import (
    DataFormat,
    Message,
    PreferenceExample,
    RowError,
    parse_preference_line,
)
from alignd.contract.spec import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_SFT_LEARNING_RATE,
    Hyperparameters,
    InitLayer,
    InitWeights,
    JobSpec,
    LoraSpec,
    LossType,
    LRScheduler,
    Precision,
    Resources,
    TrainingMethod,
    TrainingType,
    TruncationMode,
    WeightsKind,
)

__all__ = [
    "ATTENTION_ENV",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_SFT_LEARNING_RATE",
    "AttentionKernel",
    "CheckpointReport",
    "DataFormat",
    "EventLevel",
    "ExitCode",
    "Hyperparameters",
    "InitLayer",
    "InitWeights",
    "JobSpec",
    "LRScheduler",
    "LoraSpec",
    "LossType",
    "Message",
    "MetricPoint",
    "ModelFile",
    "ModelFilesResponse",
    "Precision",
    "PreferenceExample",
    "ReportBatch",
    "Resources",
    "ResumeCheckpoint",
    "RowError",
    "TerminationSummary",
    "TrainerEvent",
    "TrainingMethod",
    "TrainingType",
    "TruncationMode",
    "UploadUrlsRequest",
    "UploadUrlsResponse",
    "WeightsKind",
    "parse_preference_line",
]
