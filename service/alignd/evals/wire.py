"""The one producer of the Evals API's objects from their rows (STYLE rule 16)."""

from typing import Any

from pydantic import TypeAdapter

from alignd.contract.eval_items import GraderResult, Sample
from alignd.evals.schemas import (
    CriterionResult,
    CustomDataSourceConfigOut,
    EvalObject,
    Grader,
    GraderOut,
    ModelUsage,
    OutputItemObject,
    PreferenceGrader,
    PreferenceGraderOut,
    PreferenceOptions,
    ResultCounts,
    RunAligndInfo,
    RunDataSource,
    RunError,
    RunObject,
)
from alignd.evals.status import EvalRunStatus
from alignd.models import EvalModel, EvalOutputItemModel, EvalRunModel, RunModel

_GRADER: TypeAdapter[Grader] = TypeAdapter(Grader)
_DATA_SOURCE: TypeAdapter[RunDataSource] = TypeAdapter(RunDataSource)
SAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"output_text": {"type": "string"}, "model": {"type": "string"}},
    "required": ["output_text"],
}
"""What `{{sample.*}}` offers, as the eval's `data_source_config.schema` shows it."""


def criteria(row: EvalModel) -> list[Grader]:
    """The eval's testing criteria as request models (the shapes the executor reads)."""
    return [_GRADER.validate_python(entry) for entry in row.testing_criteria]


def data_source(row: EvalRunModel) -> RunDataSource:
    return _DATA_SOURCE.validate_python(row.data_source)


def _grader_out(grader: Grader) -> GraderOut:
    if isinstance(grader, PreferenceGrader):
        options = PreferenceOptions(beta=grader.beta, reference_model=grader.reference_model)
        return PreferenceGraderOut(name=grader.name, alignd=options)
    return grader


def item_schema_out(config: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's echo of a custom config: one schema over the namespaces graders see."""
    properties: dict[str, Any] = {"item": config["item_schema"]}
    if config.get("include_sample_schema"):
        properties["sample"] = SAMPLE_SCHEMA
    return {"type": "object", "properties": properties, "required": list(properties)}


def eval_object(row: EvalModel) -> EvalObject:
    return EvalObject(
        id=row.id,
        created_at=row.created_at,
        name=row.name,
        metadata=row.eval_metadata,
        data_source_config=CustomDataSourceConfigOut(schema_=item_schema_out(row.data_source_config)),
        testing_criteria=[_grader_out(grader) for grader in criteria(row)],
    )


def report_url(public_url: str, file_id: str | None) -> str:
    return f"{public_url}/v1/files/{file_id}/content" if file_id else ""


def run_object(row: EvalRunModel, *, public_url: str, attempt: RunModel | None = None) -> RunObject:
    """`public_url`: the server's external base URL (`Settings.resolved_public_url`), for `report_url`;
    `attempt`: the run's latest attempt (`service.latest_attempts`), whose progress the object shows."""
    return RunObject(
        id=row.id,
        eval_id=row.eval_id,
        name=row.name,
        created_at=row.created_at,
        status=EvalRunStatus(row.status).value,
        model=row.model,
        data_source=data_source(row),
        error=RunError.model_validate(row.error or {}),
        result_counts=ResultCounts.model_validate(row.result_counts or {}),
        per_testing_criteria_results=[
            CriterionResult.model_validate(entry) for entry in row.per_testing_criteria_results or []
        ],
        per_model_usage=[ModelUsage.model_validate(entry) for entry in row.per_model_usage or []],
        report_url=report_url(public_url, row.report_file_id),
        metadata=row.run_metadata,
        alignd=RunAligndInfo(
            report_file_id=row.report_file_id,
            started_at=row.started_at,
            finished_at=row.finished_at,
            cancel_requested=row.desired == "cancel",
            attempt=attempt.attempt if attempt is not None else 0,
            items_graded=attempt.step if attempt is not None else None,
            items_total=attempt.total_steps if attempt is not None else None,
        ),
    )


def output_item_object(row: EvalOutputItemModel) -> OutputItemObject:
    return OutputItemObject(
        id=row.id,
        eval_id=row.eval_id,
        run_id=row.run_id,
        created_at=row.created_at,
        status=row.status,
        datasource_item_id=row.datasource_item_id,
        datasource_item=row.datasource_item,
        results=[GraderResult.model_validate(entry) for entry in row.results],
        sample=Sample.model_validate(row.sample),
    )
