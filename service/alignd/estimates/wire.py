"""The estimate's response: `fine_tuning.job.estimate`, what a job would do before it runs.

A DPO job's files count pairs (`FileEstimate.tokens`); a supervised job's count conversations
(`FileEstimate.chat_tokens`, the pair fields then counting conversations). Everything else is shared."""

from typing import Literal

from pydantic import BaseModel, Field

from alignd.contract import TrainingMethod, TrainingType, TruncationMode
from alignd.datasets.overlap import Overlap
from alignd.schemas import DpoHyperparametersOut, SupervisedHyperparametersOut


class TokenStats(BaseModel):
    """Tokens of one part over the usable pairs: the total, and per pair its percentiles and maximum.
    For a sampled file the total is extrapolated and the rest come from the sample."""

    total: int
    mean: float
    p50: float
    p95: float
    max: int


class PairTokens(BaseModel):
    """Token counts as the trainer splits a pair (before truncation): the prompt, then each completion
    (from where the prompt+completion tokens leave the prompt's, EOS included)."""

    prompt: TokenStats
    chosen: TokenStats
    rejected: TokenStats
    trained_per_epoch: int
    """Tokens one epoch runs: prompt+chosen and prompt+rejected of every usable pair after truncation,
    the prompt counted in both (what the trainer's `num_tokens` and `tokens_per_second` count)."""


class ChatTokens(BaseModel):
    """Token counts of a chat (SFT) file's usable conversations as the trainer tokenizes them (the chat
    template, before truncation): the whole conversation, and its trained tokens (the assistant turns
    with weight 1, what the loss is taken over)."""

    conversation: TokenStats
    trained: TokenStats
    trained_per_epoch: int
    """Tokens one epoch runs: every usable conversation after truncation (what the trainer's
    `num_tokens` and `tokens_per_second` count)."""
    loss_tokens_per_epoch: int
    """Trained tokens left after truncation, over one epoch: what the supervised loss averages over."""


class TruncationEstimate(BaseModel):
    max_length: int
    truncation_mode: TruncationMode
    max_prompt_length: None = None
    """alignd has no separate prompt limit: a prompt is cut only as part of its sequence."""
    truncated_pairs: int
    """DPO jobs: pairs the trainer cuts: prompt + chosen or prompt + rejected is longer than `max_length`
    tokens, counting the pairs dropped because their prompt alone fills it. Supervised jobs: conversations
    longer than `max_length` tokens, counting those dropped because truncation left no trained token.
    Extrapolated for a sampled file."""
    truncated_share: float
    prompt_fills_max_length: int
    """Pairs the trainer drops (keep_start): the prompt alone has `max_length` tokens or more. Supervised
    jobs: conversations the trainer drops because truncation cut off every trained token."""


class FileEstimate(BaseModel):
    file_id: str
    rows: int
    pairs_tokenized: int
    """Rows tokenized: all of them, or an even sample when the file has more than the server's
    ALIGND_ESTIMATE_MAX_ROWS."""
    sampled: bool
    usable_pairs: int
    """Supervised jobs: conversations the trainer keeps (at least one trained token after truncation).
    DPO jobs: pairs the trainer keeps (extrapolated for a sampled file): rows less those whose prompt fills
    `max_length` and those below `alignd.agreement_threshold`."""
    dropped_low_agreement: int
    tokens: PairTokens | None
    """Null when no pair is usable, and for a supervised job's chat file."""
    chat_tokens: ChatTokens | None = None
    """A supervised job's chat file; null when no conversation is usable, and for a DPO job's file."""
    dropped_untrained: int = 0
    """Supervised jobs: conversations the trainer skips for having no trained token (no assistant turn
    with weight 1, or truncation cut them all off; extrapolated for a sampled file)."""
    truncation: TruncationEstimate


class StepsEstimate(BaseModel):
    """The trainer's schedule (`alignd.contract.steps`): every full batch, and a last partial one when
    each of the `shards` micro-batches gets a pair; `n_epochs` passes, cut at `max_steps`."""

    batch_size: int
    n_epochs: int
    shards: int
    """GPUs × nodes × gradient_accumulation_steps (at least 1)."""
    max_steps: int | None
    per_epoch: int
    total: int


class DurationEstimate(BaseModel):
    profile: str
    """A GPU profile of the server's throughput table (ALIGND_ESTIMATE_THROUGHPUT), or `cpu`."""
    selected: bool
    """The profile this job would run on: `alignd.resources.gpu_type`, or `cpu` for `gpus: 0`."""
    tokens_per_second: float
    """The whole run's throughput: the table's figure scaled to this model's size, times `devices`."""
    devices: int
    seconds: float
    source: str


class JobEstimate(BaseModel):
    object: Literal["fine_tuning.job.estimate"] = "fine_tuning.job.estimate"
    model: str
    training_type: TrainingType
    method: TrainingMethod = TrainingMethod.dpo
    hyperparameters: DpoHyperparametersOut | SupervisedHyperparametersOut
    """With "auto" resolved exactly as job creation resolves it."""
    training: FileEstimate
    validation: FileEstimate | None
    overlap: Overlap | None
    """Null without a validation file."""
    steps: StepsEstimate
    trained_tokens: int
    """Tokens the whole run trains on, all epochs and the `max_steps` cut included."""
    model_parameters: int | None
    """P of the model: parameters without the input embedding; null when its config could not be read
    (durations are then not scaled to it)."""
    durations: list[DurationEstimate]
    assumptions: list[str]
    warnings: list[str] = Field(default_factory=list)
    """Findings worth reading before launching: truncation, overlap, sampling, unknown profile."""
    job_created: Literal[False] = False
    """An estimate never creates a job or launches anything."""
