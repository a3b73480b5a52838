"""Wire shapes of the Evals API: OpenAI's requests and objects (`eval`, `eval.run`,
`eval.run.output_item`), plus alignd's `preference` grader.

Requests are checked strictly (`extra="forbid"`), so an option alignd does not implement (a `python`
grader, a `cosine` similarity, `tools` in sampling params) is refused with a 400 that names it rather
than silently ignored. Responses validate against the openai SDK's own models with strict response
validation; `tests/evals` holds them to it.

The `preference` grader is alignd's: the SDK's union of testing criteria has no such type, so
responses show it as a `python` grader whose `source` says what it does and whose `alignd` object
holds its options (`{"type": "python", "name": ..., "source": "alignd:preference ...", "alignd":
{"type": "preference", "beta": 0.1, "reference_model": null}}`). Requests may use either form.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alignd.contract.eval_items import GraderResult, Sample
from alignd.contract.types import Flag, Int, Number

Name = Annotated[str, Field(min_length=1, max_length=256)]
TemplateText = Annotated[str, Field(max_length=100_000)]
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Metadata = dict[str, str]

SUPPORTED_METRICS = (
    "fuzzy_match",
    "bleu",
    "gleu",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
"""`text_similarity` metrics computed from the two strings alone. `cosine` needs an embedding model and
`meteor` a WordNet download: refused at creation."""
UNSUPPORTED_METRICS = ("cosine", "meteor")
UNSUPPORTED_GRADERS = {
    "python": "python graders run user code, which alignd does not do",
    "multi": "multi graders are not supported; list the graders as separate testing criteria",
    "endpoint": "endpoint graders are not supported",
}
PREFERENCE_SOURCE = (
    "alignd:preference (built in): for each preference pair, passes when the model gives the chosen "
    "response a higher sequence log-prob than the rejected one; reports the implicit reward margin "
    "beta * ((log p(chosen) - log ref(chosen)) - (log p(rejected) - log ref(rejected)))"
)
"""The `source` a `preference` grader shows as, in the SDK's `python` grader shape."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_metadata(value: Metadata | None) -> Metadata | None:
    """OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("at most 16 metadata pairs")
    for key, item in value.items():
        if len(key) > 64 or len(item) > 512:
            raise ValueError(f"metadata key {key[:64]!r}: keys up to 64 characters, values up to 512")
    return value


# ---- graders -------------------------------------------------------------------------------------------


class GraderMessage(_Request):
    """A chat message of a model grader's prompt; `content` may hold templates."""

    role: Literal["user", "assistant", "system", "developer"]
    content: TemplateText
    type: Literal["message"] | None = None


class StringCheckGrader(_Request):
    type: Literal["string_check"]
    name: Name
    input: TemplateText
    reference: TemplateText
    operation: Literal["eq", "ne", "like", "ilike"]
    """eq/ne: exact (in)equality; like/ilike: `input` contains `reference` (ilike: ignoring case)."""


class TextSimilarityGrader(_Request):
    type: Literal["text_similarity"]
    name: Name
    input: TemplateText
    reference: TemplateText
    evaluation_metric: str
    pass_threshold: Number
    """An item passes when the metric (0..1) is at least this."""

    @field_validator("evaluation_metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in SUPPORTED_METRICS:
            why = " (it needs a service alignd does not call)" if value in UNSUPPORTED_METRICS else ""
            supported = ", ".join(SUPPORTED_METRICS)
            raise ValueError(f"metric {value!r} is not supported{why}; use one of {supported}")
        return value


class ScoreSamplingParams(_Request):
    """The judge's sampling; `max_completions_tokens` is the SDK's spelling here."""

    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, gt=0, le=1)
    seed: Int | None = Field(None, ge=0, le=2**31 - 1)
    max_completions_tokens: Int | None = Field(None, ge=1, le=32_768)


class ScoreModelGrader(_Request):
    """A judge model reads the messages (templates rendered) and answers a number in `range`."""

    type: Literal["score_model"]
    name: Name
    model: ModelName
    input: list[GraderMessage] = Field(min_length=1, max_length=64)
    range: list[Number] | None = Field(None, min_length=2, max_length=2)
    pass_threshold: Number | None = None
    sampling_params: ScoreSamplingParams | None = None

    @model_validator(mode="after")
    def _range(self) -> "ScoreModelGrader":
        low, high = self.range or (0.0, 1.0)
        if low >= high:
            raise ValueError(f"range: the low end {low} must be below the high end {high}")
        if self.pass_threshold is not None and not low <= self.pass_threshold <= high:
            raise ValueError(f"pass_threshold {self.pass_threshold} is outside range [{low}, {high}]")
        return self


class LabelModelGrader(_Request):
    """A judge model answers one of `labels`; an item passes when it is one of `passing_labels`."""

    type: Literal["label_model"]
    name: Name
    model: ModelName
    input: list[GraderMessage] = Field(min_length=1, max_length=64)
    labels: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1, max_length=64)
    passing_labels: list[str] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _passing(self) -> "LabelModelGrader":
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown} are not among labels {self.labels}")
        return self


class PreferenceGrader(_Request):
    """alignd's grader for preference (DPO) data: needs a run whose items are preference pairs and a model.

    Per pair: passes when the model's sequence log-prob of `chosen` is above that of `rejected` (the
    measure DPO moves); score = the implicit reward margin against `reference_model` (default: the
    base model of the run's model, so a base model scores 0 against itself)."""

    type: Literal["preference"]
    name: Name
    beta: Number = Field(0.1, gt=0, le=100)
    reference_model: ModelName | None = None


class PreferenceOptions(BaseModel):
    type: Literal["preference"] = "preference"
    beta: float
    reference_model: str | None = None


class PreferenceGraderOut(BaseModel):
    """How a `preference` grader appears in responses: the SDK's `python` grader shape (see the module
    docstring); it is never executed as Python."""

    type: Literal["python"] = "python"
    name: str
    source: str = PREFERENCE_SOURCE
    pass_threshold: float | None = None
    alignd: PreferenceOptions


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | LabelModelGrader | PreferenceGrader,
    Field(discriminator="type"),
]
GraderOut = (
    StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | LabelModelGrader | PreferenceGraderOut
)


def _grader_entry(index: int, entry: Any) -> Any:
    """A `python`-shaped preference grader (as responses show it) read back as a `preference` grader;
    grader types alignd does not run refused with what to do instead."""
    if not isinstance(entry, dict):
        return entry
    kind = entry.get("type")
    options = entry.get("alignd")
    if kind == "python" and isinstance(options, dict) and options.get("type") == "preference":
        settings = {key: value for key, value in options.items() if key != "type"}
        return {"type": "preference", "name": entry.get("name"), **settings}
    if isinstance(kind, str) and kind in UNSUPPORTED_GRADERS:
        raise ValueError(
            f"testing_criteria[{index}]: grader type {kind!r} is not supported: {UNSUPPORTED_GRADERS[kind]}; "
            "alignd runs string_check, text_similarity, score_model, label_model and preference"
        )
    return entry


# ---- evals ---------------------------------------------------------------------------------------------


class CustomDataSourceConfig(_Request):
    """The shape of the items runs of this eval read: a JSON schema of one item (an object)."""

    type: Literal["custom"]
    item_schema: dict[str, Any]
    include_sample_schema: Flag = False
    """True when graders read `{{sample.output_text}}`: runs must then generate (a completions source)."""

    @field_validator("item_schema")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError('the item schema must describe an object ("type": "object")')
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError('"properties" must be an object mapping field names to their schemas')
        return value

    @property
    def item_fields(self) -> list[str]:
        return list(self.item_schema.get("properties", {}))


class EvalCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "polite replies",
                    "data_source_config": {
                        "type": "custom",
                        "item_schema": {
                            "type": "object",
                            "properties": {"prompt": {"type": "string"}, "chosen": {"type": "string"}},
                            "required": ["prompt"],
                        },
                        "include_sample_schema": True,
                    },
                    "testing_criteria": [
                        {
                            "type": "string_check",
                            "name": "says please",
                            "input": "{{sample.output_text}}",
                            "reference": "please",
                            "operation": "ilike",
                        },
                        {"type": "preference", "name": "prefers chosen", "beta": 0.1},
                    ],
                }
            ]
        },
    )

    name: str | None = Field(None, max_length=256)
    metadata: Metadata | None = None
    data_source_config: CustomDataSourceConfig
    testing_criteria: list[Grader] = Field(min_length=1, max_length=32)

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("testing_criteria", mode="before")
    @classmethod
    def _known_graders(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_grader_entry(i, entry) for i, entry in enumerate(value)]
        return value

    @field_validator("testing_criteria")
    @classmethod
    def _unique_names(cls, value: list[Grader]) -> list[Grader]:
        """Results name their criterion, so two criteria with one name could not be told apart."""
        names = [grader.name for grader in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two testing criteria are named {name!r}; give each a unique name")
        return value


class EvalUpdate(_Request):
    name: str | None = Field(None, max_length=256)
    metadata: Metadata | None = None

    _metadata = field_validator("metadata")(check_metadata)


class CustomDataSourceConfigOut(BaseModel):
    """OpenAI's echo: the JSON schema of what graders see, `{"item": <item_schema>, "sample": ...}`."""

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["custom"] = "custom"
    schema_: dict[str, Any] = Field(alias="schema")


class EvalObject(BaseModel):
    id: str
    object: Literal["eval"] = "eval"
    created_at: int
    name: str
    metadata: Metadata | None = None
    data_source_config: CustomDataSourceConfigOut
    testing_criteria: list[GraderOut]


class EvalDeleted(BaseModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool = True
    eval_id: str


# ---- runs ----------------------------------------------------------------------------------------------


class FileIdSource(_Request):
    """Items from an uploaded file (purpose `evals`, or `fine-tune` preference data): one JSON object per
    line, either `{"item": {...}}` (OpenAI's shape) or the item itself (a preference file's rows are items
    as they are)."""

    type: Literal["file_id"]
    id: str = Field(min_length=1, max_length=64)


class FileContentRow(_Request):
    item: dict[str, Any]
    sample: dict[str, Any] | None = None


class FileContentSource(_Request):
    """Items inline in the request."""

    type: Literal["file_content"]
    content: list[FileContentRow] = Field(min_length=1, max_length=10_000)


Source = Annotated[FileIdSource | FileContentSource, Field(discriminator="type")]


class TemplateMessage(_Request):
    role: Literal["user", "assistant", "system", "developer"]
    content: TemplateText
    type: Literal["message"] | None = None


class InputMessagesTemplate(_Request):
    """The chat sent to the model for each item; `{{item.<field>}}` placeholders are filled per item."""

    type: Literal["template"]
    template: list[TemplateMessage] = Field(min_length=1, max_length=64)


class SamplingParams(_Request):
    """Generation settings; unset ones take the evaluator's defaults (greedy, seed 0)."""

    temperature: Number | None = Field(None, ge=0, le=2)
    """0 is greedy decoding."""
    max_completion_tokens: Int | None = Field(None, ge=1, le=32_768)
    top_p: Number | None = Field(None, gt=0, le=1)
    seed: Int | None = Field(None, ge=0, le=2**31 - 1)
    """Generation is deterministic for a given seed."""


class CompletionsDataSource(_Request):
    """Items, a model, and how to prompt it. Without `input_messages` nothing is generated: the run
    scores the items with `model` (what `preference` graders need) and grades item fields only."""

    type: Literal["completions"]
    source: Source
    model: ModelName | None = None
    input_messages: InputMessagesTemplate | None = None
    sampling_params: SamplingParams | None = None


class JsonlDataSource(_Request):
    """Items only (each may carry its own `sample`): graders read them, no model runs."""

    type: Literal["jsonl"]
    source: Source


RunDataSource = Annotated[CompletionsDataSource | JsonlDataSource, Field(discriminator="type")]


class RunCreate(_Request):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "base vs tuned",
                    "data_source": {
                        "type": "completions",
                        "model": "ft:smollm2:polite:ftjob-9f1c2e7a4b3d8e6f0a1b2c3d",
                        "source": {"type": "file_id", "id": "file-9f1c2e7a4b3d8e6f0a1b2c3d"},
                        "input_messages": {
                            "type": "template",
                            "template": [{"role": "user", "content": "{{item.prompt}}"}],
                        },
                        "sampling_params": {"temperature": 0, "max_completion_tokens": 64, "seed": 0},
                    },
                }
            ]
        },
    )

    name: str | None = Field(None, max_length=256)
    metadata: Metadata | None = None
    data_source: RunDataSource

    _metadata = field_validator("metadata")(check_metadata)


class RunError(BaseModel):
    """OpenAI's `EvalAPIError`; empty strings when the run has no error."""

    code: str = ""
    message: str = ""


class ResultCounts(BaseModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0


class CriterionResult(BaseModel):
    testing_criteria: str
    """The criterion's name."""
    passed: int
    failed: int


class ModelUsage(BaseModel):
    model_name: str
    invocation_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int


class RunAligndInfo(BaseModel):
    report_file_id: str | None = None
    """The report (`/v1/files/{id}/content`, JSONL) once the run has finished."""
    started_at: int | None = None
    finished_at: int | None = None
    cancel_requested: bool = False
    attempt: int = 0
    """Launches so far: a lost run is launched again (`ALIGND_EVAL_MAX_RETRIES`)."""
    items_graded: int | None = None
    """Progress of the latest attempt, as its evaluator reported it: items graded so far..."""
    items_total: int | None = None
    """...of this many; None until the evaluator first reports."""


class RunObject(BaseModel):
    id: str
    object: Literal["eval.run"] = "eval.run"
    eval_id: str
    name: str
    created_at: int
    status: str
    """queued, in_progress, completed, failed or canceled."""
    model: str
    """The model under evaluation ("" for a jsonl source)."""
    data_source: CompletionsDataSource | JsonlDataSource
    error: RunError = Field(default_factory=RunError)
    result_counts: ResultCounts = Field(default_factory=ResultCounts)
    per_testing_criteria_results: list[CriterionResult] = Field(default_factory=list)
    per_model_usage: list[ModelUsage] = Field(default_factory=list)
    report_url: str = ""
    metadata: Metadata | None = None
    alignd: RunAligndInfo = Field(default_factory=RunAligndInfo)


class RunDeleted(BaseModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool = True
    run_id: str


class OutputItemObject(BaseModel):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    eval_id: str
    run_id: str
    created_at: int
    status: str
    """pass, fail, or error (the sample or a grader failed)."""
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[GraderResult]
    sample: Sample
