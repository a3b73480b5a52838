"""What an evaluator reports for each data source item of an eval run: the sample the model generated
(if the run generates) and one result per testing criterion.

The control plane stores these as the run's output items (`alignd.evals.service.record_output_items`,
keyed by `datasource_item_id`, so a retried attempt that reports an item again replaces it) and serves
them in OpenAI's `eval.run.output_item` shape; the fields here are OpenAI's names. Pydantic only: the
trainer image imports it too.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SampleError(BaseModel):
    """OpenAI's `EvalAPIError`; both strings empty when there was no error."""

    code: str = ""
    message: str = ""


class SampleMessage(BaseModel):
    role: str
    content: str


class SampleUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class Sample(BaseModel):
    """What the model under evaluation produced for one item. A run that does not generate (only
    `preference` graders) reports the defaults: no input, no output."""

    input: list[SampleMessage] = Field(default_factory=list)
    output: list[SampleMessage] = Field(default_factory=list)
    model: str = ""
    finish_reason: str = ""
    seed: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    max_completion_tokens: int = 0
    usage: SampleUsage = Field(default_factory=SampleUsage)
    error: SampleError = Field(default_factory=SampleError)

    @property
    def failed(self) -> bool:
        return bool(self.error.code or self.error.message)


class GraderResult(BaseModel):
    """One testing criterion's verdict on one item. `name` is the criterion's name (unique in an eval).

    `error` set means the grader could not grade (a judge that did not answer, a reply with no score):
    the item counts as errored, not failed. Grader-specific details go in `alignd` (the `preference`
    grader: chosen/rejected log-probs of the policy and the reference, and the implicit reward margin);
    `sample` holds a judge model's exchange for `score_model`/`label_model`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    passed: bool
    score: float
    sample: dict[str, Any] | None = None
    error: str | None = None
    alignd: dict[str, Any] | None = None


class OutputItem(BaseModel):
    """One graded item. `datasource_item_id` is the 0-based index of the item in the run's data source."""

    model_config = ConfigDict(extra="forbid")

    datasource_item_id: int = Field(ge=0)
    datasource_item: dict[str, Any]
    results: list[GraderResult]
    sample: Sample = Field(default_factory=Sample)


def datasource_row(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The item (and the sample, if it carries one) of one line of a data source file.

    A line is either OpenAI's `{"item": {...}, "sample": {...}}` (sample optional) or the item itself:
    the rows of a preference file are items as they are, so `{{item.prompt}}` reads a pair's prompt.
    """
    if isinstance(row.get("item"), dict) and set(row) <= {"item", "sample"}:
        sample = row.get("sample")
        return row["item"], sample if isinstance(sample, dict) else None
    return row, None
