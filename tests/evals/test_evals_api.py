"""Evals and runs through the official openai SDK (strict response validation): create, read, list,
update, delete; runs queued, listed, canceled, deleted; the preference grader's round trip."""

from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from alignd.deps import AppState
from tests.evals.conftest import (
    PAIRS,
    completions_source,
    eval_body,
    new_project_key,
    sdk_client,
    succeeded_job,
)


def test_create_retrieve_list_update_delete(sdk: openai.OpenAI) -> None:
    created = sdk.evals.create(**eval_body())
    assert created.object == "eval" and created.id.startswith("eval_")
    assert created.name == "polite" and created.metadata == {"team": "a"}
    assert created.data_source_config.type == "custom"
    schema: Any = created.data_source_config.schema_
    assert schema["properties"]["item"]["properties"]["prompt"] == {"type": "string"}
    assert schema["properties"]["sample"]["properties"]["output_text"] == {"type": "string"}
    check, preference = created.testing_criteria
    assert check.type == "string_check" and check.name == "says please"
    # alignd's preference grader comes back in the SDK's python-grader shape, its options under `alignd`.
    assert preference.type == "python" and preference.name == "prefers chosen"
    assert (preference.model_extra or {})["alignd"] == {
        "type": "preference",
        "beta": 0.1,
        "reference_model": None,
    }

    assert sdk.evals.retrieve(created.id).model_dump() == created.model_dump()

    second = sdk.evals.create(**eval_body(name="second"))
    page = sdk.evals.list(limit=1)
    assert [e.id for e in page.data] == [created.id] and page.has_more
    assert [e.id for e in sdk.evals.list(limit=1)] == [created.id, second.id]
    assert [e.id for e in sdk.evals.list(order="desc").data] == [second.id, created.id]

    updated = sdk.evals.update(created.id, name="renamed", metadata={"team": "b"})
    assert updated.name == "renamed" and updated.metadata == {"team": "b"}
    assert [c.model_dump() for c in updated.testing_criteria] == [
        c.model_dump() for c in created.testing_criteria
    ]

    deleted = sdk.evals.delete(created.id)
    assert deleted.deleted and deleted.eval_id == created.id
    with pytest.raises(openai.NotFoundError):
        sdk.evals.retrieve(created.id)
    assert [e.id for e in sdk.evals.list().data] == [second.id]


def test_an_echoed_preference_grader_creates_the_same_eval(sdk: openai.OpenAI) -> None:
    """A client that copies an eval's criteria (python-shaped preference grader included) gets the same
    criteria back."""
    first = sdk.evals.create(**eval_body())
    criteria = [c.model_dump(exclude_none=True) for c in first.testing_criteria]
    copy = sdk.evals.create(**eval_body(testing_criteria=criteria))
    assert copy.testing_criteria == first.testing_criteria


def test_every_grader_type_round_trips(sdk: openai.OpenAI, model_id: str) -> None:
    judge = [
        {"role": "system", "content": "Grade it."},
        {"role": "user", "content": "{{sample.output_text}}"},
    ]
    criteria: list[dict[str, Any]] = [
        {
            "type": "text_similarity",
            "name": "close to chosen",
            "input": "{{sample.output_text}}",
            "reference": "{{item.chosen}}",
            "evaluation_metric": "rouge_l",
            "pass_threshold": 0.5,
        },
        {
            "type": "score_model",
            "name": "judged",
            "model": model_id,
            "input": judge,
            "range": [1, 10],
            "pass_threshold": 7,
            "sampling_params": {"temperature": 0, "seed": 1, "max_completions_tokens": 8},
        },
        {
            "type": "label_model",
            "name": "labelled",
            "model": model_id,
            "input": judge,
            "labels": ["polite", "rude"],
            "passing_labels": ["polite"],
        },
    ]
    created = sdk.evals.create(**eval_body(testing_criteria=criteria))
    assert [c.type for c in created.testing_criteria] == ["text_similarity", "score_model", "label_model"]
    similarity, score, label = (c.model_dump(exclude_none=True) for c in created.testing_criteria)
    assert similarity == criteria[0]
    assert score == criteria[1] | {"range": [1.0, 10.0], "pass_threshold": 7.0}
    assert label == criteria[2]


def test_runs_are_queued_listed_canceled_and_deleted(
    sdk: openai.OpenAI, model_id: str, pairs_file: str
) -> None:
    evaluation = sdk.evals.create(**eval_body())
    run = sdk.evals.runs.create(
        evaluation.id, name="base", data_source=completions_source(model_id, pairs_file), metadata={"k": "v"}
    )
    assert run.object == "eval.run" and run.id.startswith("evalrun_")
    assert run.status == "queued" and run.model == model_id and run.name == "base"
    assert run.eval_id == evaluation.id and run.metadata == {"k": "v"}
    assert run.result_counts.total == 0 and run.per_testing_criteria_results == []
    assert run.report_url == "" and run.error.code == ""
    assert run.data_source.type == "completions"
    assert run.data_source.source.type == "file_id" and run.data_source.source.id == pairs_file
    assert run.data_source.sampling_params is not None and run.data_source.sampling_params.seed == 7

    assert sdk.evals.runs.retrieve(run.id, eval_id=evaluation.id).model_dump() == run.model_dump()
    other = sdk.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs_file))
    assert other.name == "polite run"
    assert [r.id for r in sdk.evals.runs.list(evaluation.id).data] == [run.id, other.id]
    assert [r.id for r in sdk.evals.runs.list(evaluation.id, order="desc", limit=1).data] == [other.id]

    # Queued with nothing launched: canceled at once.
    canceled = sdk.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert canceled.status == "canceled"
    assert [r.id for r in sdk.evals.runs.list(evaluation.id, status="queued").data] == [other.id]
    assert [r.id for r in sdk.evals.runs.list(evaluation.id, status="canceled").data] == [run.id]

    # An eval with a queued run cannot be deleted; nor can the queued run.
    with pytest.raises(openai.ConflictError, match="cancel"):
        sdk.evals.delete(evaluation.id)
    with pytest.raises(openai.ConflictError, match="cancel"):
        sdk.evals.runs.delete(other.id, eval_id=evaluation.id)

    deleted = sdk.evals.runs.delete(run.id, eval_id=evaluation.id)
    assert deleted.deleted and deleted.run_id == run.id
    with pytest.raises(openai.NotFoundError):
        sdk.evals.runs.retrieve(run.id, eval_id=evaluation.id)

    sdk.evals.runs.cancel(other.id, eval_id=evaluation.id)
    assert sdk.evals.delete(evaluation.id).deleted


def test_openai_cancel_path(
    client: TestClient, key: str, sdk: openai.OpenAI, model_id: str, pairs_file: str
) -> None:
    """OpenAI's API reference cancels with POST /evals/{id}/runs/{run_id}; the SDK posts to .../cancel."""
    evaluation = sdk.evals.create(**eval_body())
    run = sdk.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs_file))
    response = client.post(
        f"/v1/evals/{evaluation.id}/runs/{run.id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"


def test_a_run_of_a_fine_tuned_model(
    sdk: openai.OpenAI, client: TestClient, key: str, state: AppState, model_id: str, pairs_file: str
) -> None:
    tuned = succeeded_job(state, client, key, model_id, pairs_file)
    evaluation = sdk.evals.create(**eval_body())
    run = sdk.evals.runs.create(evaluation.id, data_source=completions_source(tuned, pairs_file))
    assert run.status == "queued" and run.model == tuned


def test_inline_items_and_a_jsonl_source(sdk: openai.OpenAI, model_id: str) -> None:
    """`file_content` carries items in the request; a `jsonl` run grades items' own samples."""
    evaluation = sdk.evals.create(**eval_body(testing_criteria=[eval_body()["testing_criteria"][0]]))
    content = [{"item": pair, "sample": {"output_text": "ok, please"}} for pair in PAIRS]
    run = sdk.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}
    )
    assert run.status == "queued" and run.model == ""
    assert run.data_source.type == "jsonl"
    inline = sdk.evals.runs.create(
        evaluation.id,
        data_source=completions_source(model_id, "", source={"type": "file_content", "content": content}),
    )
    assert inline.status == "queued"


def test_projects_see_only_their_own_evals(
    client: TestClient, sdk: openai.OpenAI, model_id: str, pairs_file: str
) -> None:
    evaluation = sdk.evals.create(**eval_body())
    run = sdk.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs_file))
    other = sdk_client(client, new_project_key(client, "team-b"))
    with pytest.raises(openai.NotFoundError):
        other.evals.retrieve(evaluation.id)
    with pytest.raises(openai.NotFoundError):
        other.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    with pytest.raises(openai.NotFoundError):
        other.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert other.evals.list().data == []


def test_eval_runs_count_against_the_project_quota(client: TestClient, model_id: str) -> None:
    limited = sdk_client(client, new_project_key(client, "small", quota_concurrent_jobs=1))
    pairs = client.post(
        "/v1/files",
        files={
            "file": (
                "p.jsonl",
                b"".join(f'{{"prompt":"p","chosen":"a","rejected":"b{i}"}}\n'.encode() for i in range(3)),
            )
        },
        data={"purpose": "fine-tune"},
        headers={"Authorization": f"Bearer {limited.api_key}"},
    ).json()["id"]
    evaluation = limited.evals.create(**eval_body())
    first = limited.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs))
    with pytest.raises(openai.RateLimitError, match="eval run quota"):
        limited.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs))
    limited.evals.runs.cancel(first.id, eval_id=evaluation.id)
    assert (
        limited.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs)).status
        == "queued"
    )
