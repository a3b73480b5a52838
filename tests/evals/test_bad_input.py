"""Bad evals and runs get a 400 naming the field, and nothing is stored (so nothing can be launched)."""

from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from alignd.deps import AppState
from alignd.evals import service
from alignd.evals.resolve import ResolvedRun
from alignd.evals.status import EvalRunStatus
from alignd.models import EvalRunModel
from tests.evals.conftest import (
    ITEM_SCHEMA,
    PAIRS,
    completions_source,
    eval_body,
    new_project_key,
    upload,
)


def refused(call: Callable[[], object]) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    return caught.value


def check(name: str = "c", **fields: Any) -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": name,
        "input": "{{item.prompt}}",
        "reference": "x",
        "operation": "eq",
    } | fields


@pytest.mark.parametrize(
    ("criterion", "param", "message"),
    [
        (
            {"type": "python", "name": "p", "source": "def grade(s, i): return 1"},
            "testing_criteria",
            "python graders",
        ),
        (
            {"type": "multi", "name": "m", "graders": {}, "calculate_output": "1"},
            "testing_criteria",
            "multi graders",
        ),
        ({"type": "wordcount", "name": "w"}, "testing_criteria.0", "does not match any of the expected tags"),
        (
            {
                "type": "text_similarity",
                "name": "t",
                "input": "{{item.prompt}}",
                "reference": "x",
                "evaluation_metric": "cosine",
                "pass_threshold": 0.5,
            },
            "testing_criteria.0.text_similarity.evaluation_metric",
            "metric 'cosine' is not supported",
        ),
        (check(input="{{item.answer}}"), "testing_criteria.0.input", "item field 'answer'"),
        (check(reference="{{ answer }}"), "testing_criteria.0.reference", "invalid template variable"),
        (
            check(input="{{sample.logprobs}}"),
            "testing_criteria.0.input",
            "a sample offers sample.output_text",
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "m",
                "input": [{"role": "user", "content": "hi"}],
                "labels": ["a"],
                "passing_labels": ["b"],
            },
            "testing_criteria.0.label_model",
            "passing_labels ['b'] are not among labels",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "{{item.nope}}"}],
            },
            "testing_criteria.0.input.0.content",
            "item field 'nope'",
        ),
    ],
)
def test_bad_eval(sdk: openai.OpenAI, criterion: dict[str, Any], param: str, message: str) -> None:
    error = refused(lambda: sdk.evals.create(**eval_body(testing_criteria=[criterion])))
    assert error.param == param, error.body
    assert message in error.message
    assert sdk.evals.list().data == []


def test_sample_templates_need_a_declared_sample(sdk: openai.OpenAI) -> None:
    config = {"type": "custom", "item_schema": ITEM_SCHEMA}
    error = refused(lambda: sdk.evals.create(**eval_body(data_source_config=config)))
    assert error.param == "testing_criteria.0.input" and "include_sample_schema" in error.message


def test_duplicate_criterion_names_and_a_non_object_schema(sdk: openai.OpenAI) -> None:
    error = refused(lambda: sdk.evals.create(**eval_body(testing_criteria=[check(), check()])))
    assert error.param == "testing_criteria" and "unique name" in error.message
    config = {"type": "custom", "item_schema": {"type": "array"}}
    error = refused(lambda: sdk.evals.create(**eval_body(data_source_config=config)))
    assert error.param == "data_source_config.item_schema"
    error = refused(
        lambda: sdk.evals.create(**eval_body(data_source_config={"type": "logs", "metadata": {}}))
    )
    assert error.param is not None and error.param.startswith("data_source_config")


@pytest.fixture
def eval_id(sdk: openai.OpenAI) -> str:
    return sdk.evals.create(**eval_body()).id


def run_refused(sdk: openai.OpenAI, eval_id: str, data_source: dict[str, Any]) -> openai.BadRequestError:
    error = refused(lambda: sdk.evals.runs.create(eval_id, data_source=data_source))  # type: ignore[arg-type]
    assert sdk.evals.runs.list(eval_id).data == [], "a refused run must not be stored"
    return error


def test_missing_file(sdk: openai.OpenAI, eval_id: str, model_id: str) -> None:
    error = run_refused(sdk, eval_id, completions_source(model_id, "file-doesnotexist"))
    assert error.param == "data_source.source.id" and error.code == "file_not_found"


def test_a_file_of_another_project(
    client: TestClient, sdk: openai.OpenAI, eval_id: str, model_id: str
) -> None:
    theirs = upload(client, new_project_key(client, "team-b"), PAIRS)
    error = run_refused(sdk, eval_id, completions_source(model_id, theirs))
    assert error.param == "data_source.source.id" and error.code == "file_not_found"


def test_unknown_models(
    client: TestClient,
    key: str,
    state: AppState,
    sdk: openai.OpenAI,
    eval_id: str,
    model_id: str,
    pairs_file: str,
) -> None:
    error = run_refused(sdk, eval_id, completions_source("gpt-9", pairs_file))
    assert error.param == "data_source.model" and error.code == "model_not_found"
    # A job that has not succeeded has no model to evaluate.
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": model_id, "training_file": pairs_file},
        headers={"Authorization": f"Bearer {key}"},
    )
    error = run_refused(sdk, eval_id, completions_source(f"ft:{model_id}:x:{job.json()['id']}", pairs_file))
    assert error.param == "data_source.model"
    no_model = completions_source(model_id, pairs_file)
    del no_model["model"]
    assert run_refused(sdk, eval_id, no_model).param == "data_source.model"


def test_unknown_reference_model(sdk: openai.OpenAI, model_id: str, pairs_file: str) -> None:
    reference = {"type": "preference", "name": "p", "reference_model": "nope"}
    referenced = sdk.evals.create(**eval_body(testing_criteria=[reference])).id
    error = run_refused(sdk, referenced, completions_source(model_id, pairs_file))
    assert error.param == "testing_criteria.0.reference_model"


def test_judge_models_are_the_judge_endpoints(
    sdk: openai.OpenAI, state: AppState, model_id: str, pairs_file: str
) -> None:
    """A judge is named as the configured judge endpoint knows it (vLLM, OpenAI, or this server's /v1),
    so its name is recorded for the executor rather than checked against alignd's models."""
    judge = {
        "type": "score_model",
        "name": "s",
        "model": "gpt-4o-mini",
        "input": [{"role": "user", "content": "{{sample.output_text}}"}],
    }
    judged = sdk.evals.create(**eval_body(testing_criteria=[judge])).id
    run = sdk.evals.runs.create(judged, data_source=completions_source(model_id, pairs_file))  # type: ignore[arg-type]
    with state.sessions() as session:
        resolved = ResolvedRun.model_validate(session.get_one(EvalRunModel, run.id).resolved)
    assert resolved.judges == {"s": "gpt-4o-mini"}
    assert (
        resolved.model is not None and resolved.model.base_model == model_id and resolved.items == len(PAIRS)
    )


def test_prompt_templates_name_fields_the_schema_and_the_file_have(
    client: TestClient, key: str, sdk: openai.OpenAI, eval_id: str, model_id: str, pairs_file: str
) -> None:
    bad_prompt = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}
    error = run_refused(sdk, eval_id, completions_source(model_id, pairs_file, input_messages=bad_prompt))
    assert error.param == "data_source.input_messages.template.0.content" and "question" in error.message
    sample_prompt = {"type": "template", "template": [{"role": "user", "content": "{{sample.output_text}}"}]}
    error = run_refused(sdk, eval_id, completions_source(model_id, pairs_file, input_messages=sample_prompt))
    assert error.param == "data_source.input_messages.template.0.content"

    # The schema has `topic`, the file's rows do not.
    schema = ITEM_SCHEMA | {"properties": ITEM_SCHEMA["properties"] | {"topic": {"type": "string"}}}
    topical = sdk.evals.create(
        **eval_body(
            data_source_config={"type": "custom", "item_schema": schema, "include_sample_schema": True},
            testing_criteria=[check(input="{{item.topic}}")],
        )
    ).id
    error = run_refused(sdk, topical, completions_source(model_id, pairs_file))
    assert error.param == "data_source.source.id" and "no field 'topic'" in error.message
    inline = {
        "type": "file_content",
        "content": [{"item": {"topic": "fruit", "prompt": "x"}}, {"item": {"prompt": "x"}}],
    }
    error = run_refused(sdk, topical, completions_source(model_id, "", source=inline))
    assert error.param == "data_source.source.content.1" and "no field 'topic'" in error.message


def test_preference_graders_need_pairs_and_a_model(
    sdk: openai.OpenAI, eval_id: str, model_id: str, pairs_file: str
) -> None:
    not_pairs = {
        "type": "file_content",
        "content": [{"item": {"prompt": "Name a fruit.", "chosen": "Apple."}}],
    }
    error = run_refused(sdk, eval_id, completions_source(model_id, "", source=not_pairs))
    assert error.param == "data_source.source.content.0" and "not a preference pair" in error.message
    items_only = {"type": "jsonl", "source": {"type": "file_id", "id": pairs_file}}
    error = run_refused(sdk, eval_id, items_only)
    assert error.param == "data_source.type" and "preference grader" in error.message


def test_graders_reading_samples_need_a_generating_run_or_samples(
    sdk: openai.OpenAI, model_id: str, pairs_file: str
) -> None:
    sample_check = check(input="{{sample.output_text}}")
    evaluation = sdk.evals.create(**eval_body(testing_criteria=[sample_check])).id
    error = run_refused(sdk, evaluation, {"type": "jsonl", "source": {"type": "file_id", "id": pairs_file}})
    assert error.param == "data_source.source.id" and "input_messages" in error.message
    no_prompt = completions_source(model_id, pairs_file)
    del no_prompt["input_messages"]
    assert run_refused(sdk, evaluation, no_prompt).param == "data_source.source.id"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"source": {"type": "stored_completions", "limit": 5}}, "data_source.completions.source"),
        ({"sampling_params": {"tools": []}}, "data_source.completions.sampling_params.tools"),
        ({"sampling_params": {"temperature": 3}}, "data_source.completions.sampling_params.temperature"),
        (
            {"input_messages": {"type": "item_reference", "item_reference": "item.messages"}},
            "data_source.completions.input_messages.type",
        ),
    ],
)
def test_unsupported_run_options(
    sdk: openai.OpenAI, eval_id: str, model_id: str, pairs_file: str, change: dict[str, Any], param: str
) -> None:
    error = run_refused(sdk, eval_id, completions_source(model_id, pairs_file, **change))
    assert error.param is not None and error.param.startswith(param), error.body


def test_a_results_file_is_not_a_data_source(
    sdk: openai.OpenAI, state: AppState, eval_id: str, model_id: str, pairs_file: str
) -> None:
    """A report (purpose fine-tune-results) cannot feed a run."""
    run = sdk.evals.runs.create(eval_id, data_source=completions_source(model_id, pairs_file))  # type: ignore[arg-type]
    with state.sessions() as session:
        row = session.get_one(EvalRunModel, run.id)
        assert service.mark_in_progress(session, row)
        assert service.finish_run(session=session, store=state.store, run=row, status=EvalRunStatus.completed)
        report_id = row.report_file_id
    assert report_id is not None
    error = refused(
        lambda: sdk.evals.runs.create(eval_id, data_source=completions_source(model_id, report_id))
    )  # type: ignore[arg-type]
    assert error.param == "data_source.source.id" and error.code == "invalid_file_purpose"
