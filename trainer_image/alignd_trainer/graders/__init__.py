"""Graders of one evaluation run: each data item's sample is graded by every grader of the eval.

`grade_sample` runs the graders that read an item and its generated sample (string_check,
text_similarity, score_model, label_model); `preference.PreferenceScorer` runs the `preference`
grader, which reads the model's log-probs instead of a sample, a batch of items at once.
"""

from collections.abc import Mapping
from typing import Any

from alignd.contract.eval_items import GraderResult, SampleMessage
from alignd.contract.evals import (
    Grader,
    LabelModelGrader,
    MessageTemplate,
    PreferenceGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from alignd.contract.templates import TemplateError, render
from alignd_trainer.graders.judge import Judge, grade_label, grade_score
from alignd_trainer.graders.text import similarity, string_check


def render_messages(
    templates: list[MessageTemplate], item: Mapping[str, Any], sample: Mapping[str, Any] | None
) -> list[SampleMessage]:
    return [
        SampleMessage(role=t.role, content=render(t.content, item=item, sample=sample)) for t in templates
    ]


def grade_sample(
    grader: Grader, item: Mapping[str, Any], sample: Mapping[str, Any] | None, *, judge: Judge | None
) -> GraderResult:
    """One grader's result for one item and its sample (`{"output_text": ...}`, or None). A template
    that names what the item lacks is an error on the item (TemplateError's message names the field)."""
    try:
        return _grade(grader, item, sample, judge)
    except TemplateError as exc:
        return GraderResult(name=grader.name, type=grader.type, score=0.0, passed=False, error=str(exc))


def _grade(
    grader: Grader, item: Mapping[str, Any], sample: Mapping[str, Any] | None, judge: Judge | None
) -> GraderResult:
    match grader:
        case StringCheckGrader():
            value = render(grader.input, item=item, sample=sample)
            reference = render(grader.reference, item=item, sample=sample)
            passed = string_check(grader.operation, value, reference)
            return GraderResult(name=grader.name, type=grader.type, score=float(passed), passed=passed)
        case TextSimilarityGrader():
            value = render(grader.input, item=item, sample=sample)
            reference = render(grader.reference, item=item, sample=sample)
            score = similarity(grader.evaluation_metric, value, reference)
            return GraderResult(
                name=grader.name, type=grader.type, score=score, passed=score >= grader.pass_threshold
            )
        case ScoreModelGrader():
            return grade_score(_need(judge), grader, render_messages(grader.input, item, sample))
        case LabelModelGrader():
            return grade_label(_need(judge), grader, render_messages(grader.input, item, sample))
        case PreferenceGrader():
            raise ValueError("the preference grader reads log-probs; use preference.PreferenceScorer")


def _need(judge: Judge | None) -> Judge:
    if judge is None:
        raise ValueError("model graders need a judge endpoint")
    return judge
