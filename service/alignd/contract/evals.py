"""EvalRunSpec: what the evaluator (`python -m alignd_trainer.evaluate`) receives, and what it reports.

The control plane resolves an eval run (its eval's graders, the run's data source, model and sampling)
into an EvalRunSpec when the evaluator asks for it; file ids and models in object storage arrive as
presigned URLs, as a training run's do. The evaluator posts `EvalReport` batches back: progress events
and graded output items, one per data item, keyed by the item's index so a retried attempt that grades
an item again replaces nothing twice.

Graders keep the OpenAI Evals field names (`string_check`, `text_similarity`, `score_model`,
`label_model`) plus alignd's `preference` grader, so the wire schemas convert with `model_validate`.
Pydantic and the standard library only: the trainer image imports this module.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignd.contract.eval_items import OutputItem
from alignd.contract.events import ModelFile, TrainerEvent

Role = Literal["system", "user", "assistant", "developer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRow(_Strict):
    """One data source item, with the sample a `jsonl` run's items bring along."""

    item: dict[str, Any]
    sample: dict[str, Any] | None = None


class MessageTemplate(_Strict):
    """One chat message whose content may name `{{item.<field>}}` and `{{sample.output_text}}`."""

    role: Role
    content: str


class Sampling(_Strict):
    """How the model under evaluation generates (OpenAI's `sampling_params`)."""

    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy decoding.")
    max_completion_tokens: int = Field(256, ge=1, le=32768, description="New tokens per reply.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling; 1.0 keeps every token.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Same seed, model and items: same replies.")


class StringCheckGrader(_Strict):
    """Pass when `input` compares to `reference`: eq, ne, like (contains), ilike (contains, any case)."""

    type: Literal["string_check"] = "string_check"
    name: str
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


TextMetric = Literal[
    "fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"
]
"""The `text_similarity` metrics computed locally (OpenAI's `cosine` and `meteor` need a service or a
word list and are refused when the eval is created)."""


class TextSimilarityGrader(_Strict):
    """Score in [0, 1] by a text metric of `input` against `reference`; passes at `pass_threshold`."""

    type: Literal["text_similarity"] = "text_similarity"
    name: str
    input: str
    reference: str
    evaluation_metric: TextMetric
    pass_threshold: float = Field(0.5, ge=0, le=1)


class JudgeSampling(_Strict):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    max_completions_tokens: int | None = Field(None, ge=1, le=32768)


class ScoreModelGrader(_Strict):
    """A judge model reads the rendered `input` messages and answers with a number in `range`."""

    type: Literal["score_model"] = "score_model"
    name: str
    model: str
    input: list[MessageTemplate] = Field(..., min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    """Pass at or above it; default: the middle of `range`."""
    sampling_params: JudgeSampling | None = None

    @model_validator(mode="after")
    def _range_is_ordered(self) -> "ScoreModelGrader":
        if not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [low, high] with low < high")
        return self

    @property
    def threshold(self) -> float:
        low, high = self.range
        return self.pass_threshold if self.pass_threshold is not None else (low + high) / 2


class LabelModelGrader(_Strict):
    """A judge model picks one of `labels`; passing when it picks one of `passing_labels`."""

    type: Literal["label_model"] = "label_model"
    name: str
    model: str
    input: list[MessageTemplate] = Field(..., min_length=1)
    labels: list[str] = Field(..., min_length=1)
    passing_labels: list[str] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _passing_are_labels(self) -> "LabelModelGrader":
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels {self.labels}")
        return self


class ModelSource(_Strict):
    """Where a model's files are: a directory or hub id the evaluator loads as is, or an object-store
    location whose files come as presigned URLs."""

    location: str = Field(..., min_length=1)
    files: list[ModelFile] = Field(default_factory=list)
    """Non-empty when `location` is in object storage: download these, then load the directory."""


class EvalModel(_Strict):
    name: str
    """What the user asked for (`ft:...` or a registered model id); shown in every sample."""
    base: ModelSource
    adapter: ModelSource | None = None
    """A LoRA adapter over `base` (an `ft:` model of a LoRA job)."""
    trust_remote_code: bool = False


class PreferenceGrader(_Strict):
    """alignd's grader for DPO data: each item is a preference row (prompt/chosen/rejected in any format
    the trainer reads). It passes when the model gives chosen a higher sequence log-prob than rejected;
    its score is the implicit reward margin against the base model,
    β·((log π(c) − log π_base(c)) − (log π(r) − log π_base(r))), which is 0 for the base itself."""

    type: Literal["preference"] = "preference"
    name: str
    beta: float = Field(0.1, gt=0, description="The DPO β the margin is scaled by.")
    max_length: int = Field(1024, ge=8, le=1_048_576, description="Tokens per prompt+completion.")
    reference: EvalModel | None = None
    """The model the margin is measured against; None: the base of the run's model."""


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | LabelModelGrader | PreferenceGrader,
    Field(discriminator="type"),
]


class JudgeEndpoint(_Strict):
    """The OpenAI-compatible chat endpoint `score_model` and `label_model` call (admin settings)."""

    base_url: str = Field(..., pattern=r"^https?://")
    """Up to and including `/v1`; the evaluator POSTs `{base_url}/chat/completions`."""
    api_key: str | None = Field(None, repr=False)
    timeout_seconds: float = Field(120.0, gt=0)


class EvalRunSpec(_Strict):
    run_id: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    eval_id: str = "local"
    items: list[DataRow] | None = None
    """The data items inline; or `items_url`."""
    items_url: str | None = None
    """A JSONL file (local path or URL): one item per line, either `{"item": {...}, "sample": {...}}` or
    the item itself (a preference file's rows)."""
    input_messages: list[MessageTemplate] | None = None
    """The prompt for each item; None: nothing is generated (graders read the items' own samples, and
    `preference` graders the model's log-probs)."""
    model: EvalModel | None = None
    """What generates and is scored; None for a `jsonl` run, which grades the items as they are."""
    sampling: Sampling = Field(default_factory=Sampling)
    graders: list[Grader] = Field(..., min_length=1)
    judge: JudgeEndpoint | None = None
    batch_size: int = Field(8, ge=1, le=1024, description="Prompts generated (and pairs scored) together.")
    output_dir: str = "output"

    @model_validator(mode="after")
    def _one_data_source(self) -> "EvalRunSpec":
        if (self.items is None) == (self.items_url is None):
            raise ValueError("give exactly one of items and items_url")
        if self.input_messages and self.model is None:
            raise ValueError("input_messages need a model to generate with")
        if self.model is None and any(isinstance(g, PreferenceGrader) for g in self.graders):
            raise ValueError("a preference grader needs a model to score the pairs with")
        if self.judge is None and any(
            isinstance(g, ScoreModelGrader | LabelModelGrader) for g in self.graders
        ):
            raise ValueError("score_model and label_model graders need a judge endpoint")
        return self


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalProgress(_Payload):
    done: int = Field(..., ge=0)
    """Items graded so far by this attempt."""
    total: int = Field(..., ge=0)


class EvalReport(_Payload):
    """One POST to `/internal/v1/evals/runs/{id}/report`: events, graded items (`eval_items.OutputItem`,
    stored idempotently by `datasource_item_id`) and progress. An empty report is a heartbeat."""

    events: list[TrainerEvent] = Field(default_factory=list)
    items: list[OutputItem] = Field(default_factory=list)
    progress: EvalProgress | None = None
