"""What makes an eval or a run acceptable, checked before anything is stored: every template names a
field the items have, and every grader can run on the run's data. Each failure is a 400 naming the
request field (`testing_criteria.1.input`, `data_source.input_messages.template.0.content`, ...).
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alignd.contract.preference import RowError, parse_preference_line
from alignd.contract.templates import SAMPLE_FIELDS, Reference, TemplateError, references
from alignd.errors import InvalidRequest
from alignd.evals.schemas import (
    CompletionsDataSource,
    CustomDataSourceConfig,
    EvalCreate,
    Grader,
    LabelModelGrader,
    PreferenceGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)


def grader_templates(grader: Grader) -> list[tuple[str, str]]:
    """(field path within the grader, template text) of every templated field of a grader."""
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        return [("input", grader.input), ("reference", grader.reference)]
    if isinstance(grader, ScoreModelGrader | LabelModelGrader):
        return [(f"input.{i}.content", message.content) for i, message in enumerate(grader.input)]
    return []


def _parsed(text: str, param: str) -> list[Reference]:
    try:
        return references(text)
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param=param, code="invalid_template") from None


def check_eval(request: EvalCreate) -> None:
    """Each grader's templates read fields the item schema defines, and `{{sample.*}}` only where the
    eval declares a sample (`include_sample_schema`)."""
    config = request.data_source_config
    for index, grader in enumerate(request.testing_criteria):
        for path, text in grader_templates(grader):
            param = f"testing_criteria.{index}.{path}"
            for reference in _parsed(text, param):
                _check_reference(reference, config, param)


def _check_reference(reference: Reference, config: CustomDataSourceConfig, param: str) -> None:
    if reference.namespace == "item":
        if reference.field not in config.item_fields:
            defined = ", ".join(config.item_fields) or "none"
            raise InvalidRequest(
                f"{{{{{reference}}}}} names item field {reference.field!r}, which the item_schema does not "
                f"define (its properties: {defined}); add it to data_source_config.item_schema",
                param=param,
                code="invalid_template",
            )
        return
    if reference.field not in SAMPLE_FIELDS:
        raise InvalidRequest(
            f"{{{{{reference}}}}}: a sample offers {', '.join(f'sample.{f}' for f in SAMPLE_FIELDS)}",
            param=param,
            code="invalid_template",
        )
    if not config.include_sample_schema:
        raise InvalidRequest(
            f"{{{{{reference}}}}} reads the model's sample, but the eval does not declare one: set "
            "data_source_config.include_sample_schema to true",
            param=param,
            code="invalid_template",
        )


def item_fields_read(criteria: Sequence[Grader]) -> dict[str, str]:
    """Item field -> the first criterion field reading it (for error messages)."""
    fields: dict[str, str] = {}
    for index, grader in enumerate(criteria):
        for path, text in grader_templates(grader):
            param = f"testing_criteria.{index}.{path}"
            for reference in _parsed(text, param):
                if reference.namespace == "item":
                    fields.setdefault(reference.field, param)
    return fields


def reads_sample(criteria: Sequence[Grader]) -> bool:
    return any(
        reference.namespace == "sample"
        for index, grader in enumerate(criteria)
        for path, text in grader_templates(grader)
        for reference in _parsed(text, f"testing_criteria.{index}.{path}")
    )


def check_input_messages(source: CompletionsDataSource, config: CustomDataSourceConfig) -> dict[str, str]:
    """The prompt templates read only item fields the schema defines; returns field -> param."""
    fields: dict[str, str] = {}
    if source.input_messages is None:
        return fields
    for index, message in enumerate(source.input_messages.template):
        param = f"data_source.input_messages.template.{index}.content"
        for reference in _parsed(message.content, param):
            if reference.namespace == "sample":
                raise InvalidRequest(
                    f"{{{{{reference}}}}}: the prompt is written before the model answers, so it can read "
                    "only item fields",
                    param=param,
                    code="invalid_template",
                )
            _check_reference(reference, config, param)
            fields.setdefault(reference.field, param)
    return fields


@dataclass(frozen=True)
class Row:
    """One data source row as checked: its item and, if it carries one, its sample."""

    item: dict[str, Any]
    sample: dict[str, Any] | None
    param: str
    """Where it came from, for errors: `data_source.source.content.3` or `data_source.source.id`."""
    where: str
    """In words: `content[3]`, `line 1 of file-...`."""


def check_rows_have(rows: Iterable[Row], fields: dict[str, str]) -> None:
    """Every checked row has every item field a template reads."""
    for row in rows:
        for field, used_by in fields.items():
            if field not in row.item:
                raise InvalidRequest(
                    f"{row.where}: the item has no field {field!r}, which {used_by} reads; its fields are "
                    f"{', '.join(sorted(row.item)) or 'none'}",
                    param=row.param,
                    code="invalid_template",
                )


def check_rows_have_samples(rows: Iterable[Row]) -> None:
    for row in rows:
        if row.sample is None or "output_text" not in row.sample:
            raise InvalidRequest(
                f"{row.where}: graders read {{{{sample.output_text}}}} and this row has no sample; give "
                'each row a "sample": {"output_text": ...}, or use a completions data source with '
                "input_messages so a model generates one",
                param=row.param,
                code="invalid_template",
            )


def check_preference_items(rows: Iterable[Row], grader_param: str) -> None:
    """Each inline item is a preference pair in one of the accepted formats."""
    for row in rows:
        try:
            parse_preference_line(json.dumps(row.item), 1)
        except RowError as exc:
            field = f" field {exc.field!r}:" if exc.field else ""
            raise InvalidRequest(
                f"{row.where} is not a preference pair ({grader_param} is a preference grader):{field} "
                f"{exc.message}",
                param=row.param,
                code="invalid_preference_item",
            ) from None


def preference_graders(criteria: Sequence[Grader]) -> list[tuple[int, PreferenceGrader]]:
    return [(i, g) for i, g in enumerate(criteria) if isinstance(g, PreferenceGrader)]


def judge_graders(criteria: Sequence[Grader]) -> list[tuple[int, ScoreModelGrader | LabelModelGrader]]:
    return [(i, g) for i, g in enumerate(criteria) if isinstance(g, ScoreModelGrader | LabelModelGrader)]
