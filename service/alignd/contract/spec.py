"""JobSpec: the normalised, frozen description of one training run.

The control plane resolves user input ("auto", OpenAI names) into a JobSpec at job creation;
the trainer receives exactly that object. Offline runs write it by hand (`--spec spec.json`).
"""

from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alignd.contract.types import Int, Number


class LossType(StrEnum):
    sigmoid = "sigmoid"
    ipo = "ipo"
    hinge = "hinge"
    robust = "robust"
    bco_pair = "bco_pair"
    sppo_hard = "sppo_hard"
    apo_zero = "apo_zero"
    apo_down = "apo_down"
    sft = "sft"


class TruncationMode(StrEnum):
    keep_start = "keep_start"
    keep_end = "keep_end"


class LRScheduler(StrEnum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class TrainingMethod(StrEnum):
    """What the job optimises: DPO on preference pairs, or supervised fine-tuning (SFT) on chat rows."""

    dpo = "dpo"
    supervised = "supervised"


class WeightsKind(StrEnum):
    adapter = "adapter"
    """A LoRA adapter directory (`adapter_config.json` + safetensors), merged into the weights below it."""
    full = "full"
    """A full model directory loadable with `from_pretrained`; replaces everything below it."""


class TrainingType(StrEnum):
    lora = "lora"
    full = "full"


class Precision(StrEnum):
    auto = "auto"
    """bf16 on a GPU that supports it, fp32 otherwise."""
    bf16 = "bf16"
    fp32 = "fp32"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_LEARNING_RATE = {TrainingType.lora: 5e-5, TrainingType.full: 1e-6}
DEFAULT_SFT_LEARNING_RATE = {TrainingType.lora: 2e-4, TrainingType.full: 1e-5}
"""SFT moves further from the base than DPO does: typical LoRA and full fine-tuning rates."""


class LoraSpec(_Strict):
    r: Int = Field(16, ge=1, le=1024, description="LoRA rank; 8-64 is typical.")
    alpha: Number = Field(32.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: Number = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input; 0-0.1.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or every linear projection but the LM head."
    )


class Hyperparameters(_Strict):
    beta: float = Field(0.1, gt=0, description="KL strength of DPO; 0.01-0.5.")
    n_epochs: int = Field(1, ge=1, le=100, description="Passes over the training file.")
    batch_size: int = Field(8, ge=1, le=4096, description="Preference pairs per optimizer step, all GPUs.")
    learning_rate: float | None = Field(
        None, gt=0, le=1, description="Peak AdamW learning rate; None picks 5e-5 (LoRA) or 1e-6 (full)."
    )
    loss_type: list[LossType] = Field(default_factory=lambda: [LossType.sigmoid])
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type; default all 1.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed label noise (robust DPO).")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="Share of steps with linear LR warm-up.")
    lr_scheduler: LRScheduler = LRScheduler.cosine
    weight_decay: float = Field(0.0, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping threshold (L2 norm).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    max_length: int = Field(1024, ge=8, le=1_048_576, description="Tokens per prompt+completion sequence.")
    truncation_mode: TruncationMode = TruncationMode.keep_start
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (and at the end).")
    save_steps: int | None = Field(200, ge=1, description="Checkpoint every N steps (and at the end).")
    precompute_ref_log_probs: bool = Field(False, description="One reference pass before training.")
    gradient_checkpointing: bool = False
    max_steps: int | None = Field(None, ge=1, description="Stop after N optimizer steps (caps n_epochs).")
    packing: bool = Field(
        True,
        description="Run each pair's prompt once and pack pairs without padding; false pads every sequence.",
    )

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _weights_match_losses(self) -> Self:
        if not self.loss_type:
            raise ValueError("loss_type needs at least one loss")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"loss_weights has {len(self.loss_weights)} entries but loss_type has {len(self.loss_type)}"
            )
        return self

    def weights(self) -> list[float]:
        return list(self.loss_weights) if self.loss_weights is not None else [1.0] * len(self.loss_type)


class Resources(_Strict):
    gpus: Int = Field(1, ge=0, le=64, description="GPUs per node; 0 runs on CPU.")
    gpu_type: str | None = Field(None, description="A GPU profile name configured by the admin.")
    nodes: Int = Field(1, ge=1, le=64)
    cpu: str | None = None
    memory: str | None = None
    queue: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        description="A Kueue LocalQueue the admin allows (ALIGND_K8S_KUEUE_ALLOWED_QUEUES); default: "
        "the cluster's queue.",
    )


class InitLayer(_Strict):
    """One step from the base model to the weights a job starts from."""

    kind: WeightsKind
    location: str = Field(
        ...,
        min_length=1,
        description="A local directory, or (managed runs) the storage prefix the trainer downloads through "
        "GET /internal/v1/jobs/{id}/init_files",
    )


class InitWeights(_Strict):
    """Where a job starts other than from its base model: an `ft:` model or a checkpoint of another job.

    The trainer loads the base (`JobSpec.model`), then applies `layers` in order: a `full` layer replaces
    the weights, an `adapter` layer is merged into them. The result is the starting point of training and,
    for DPO, the reference model: a DPO job started from an SFT model is regularised towards that model,
    not towards the raw base. A LoRA job trains a fresh adapter on top of the merged result.
    """

    source: str = Field(
        ..., min_length=1, description="What the user named: an ft: model or a checkpoint id."
    )
    layers: list[InitLayer] = Field(..., min_length=1, max_length=64)


class JobSpec(_Strict):
    job_id: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    model: str = Field(..., min_length=1, description="Base model directory (or a cached hub id).")
    training_file: str = Field(..., min_length=1, description="Local path or URL of the JSONL file.")
    validation_file: str | None = None
    output_dir: str = "output"
    seed: int = Field(42, ge=0, le=2**32 - 1)
    method: TrainingMethod = TrainingMethod.dpo
    init: InitWeights | None = Field(None, description="Start from these weights instead of the base's.")
    training_type: TrainingType = TrainingType.lora
    lora: LoraSpec = Field(default_factory=LoraSpec)
    precision: Precision = Precision.auto
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)
    max_runtime_seconds: int | None = Field(None, ge=1)
    agreement_threshold: float | None = Field(
        None, ge=0, le=1, description="Drop rows whose annotator agreement is below this."
    )
    trust_remote_code: bool = False
    merged_weights: bool = Field(
        True,
        description="LoRA only: also store the base with the adapter merged into it (a full copy of the "
        "base's weights, in its dtype). Full fine-tuning yields full weights anyway and ignores it.",
    )

    @property
    def learning_rate(self) -> float:
        lr = self.hyperparameters.learning_rate
        if lr is not None:
            return lr
        defaults = (
            DEFAULT_SFT_LEARNING_RATE if self.method is TrainingMethod.supervised else DEFAULT_LEARNING_RATE
        )
        return defaults[self.training_type]
