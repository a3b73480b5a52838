"""Eval item files: uploaded with purpose "evals" (any fields, one JSON object per line), listed by the SDK
as "user_data" files, and usable as a run's `file_id` source."""

import io
import json

import openai
import pytest
from fastapi.testclient import TestClient

from tests.evals.conftest import completions_source, eval_body

QUESTIONS = [
    {"item": {"question": "2 + 2?", "answer": "4"}},
    {"item": {"question": "Capital of France?", "answer": "Paris"}},
]
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
}


def jsonl(rows: list[object]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(row) + "\n" for row in rows).encode())


def test_an_item_file_feeds_a_run(sdk: openai.OpenAI, client: TestClient, key: str, model_id: str) -> None:
    uploaded = sdk.files.create(file=("questions.jsonl", jsonl(list(QUESTIONS))), purpose="evals")
    assert uploaded.purpose == "user_data" and uploaded.bytes > 0
    assert (uploaded.model_extra or {})["alignd"]["purpose"] == "evals"
    assert (uploaded.model_extra or {})["alignd"]["rows"] == 2
    assert sdk.files.retrieve(uploaded.id).model_dump() == uploaded.model_dump()
    report = client.get(f"/v1/files/{uploaded.id}/report", headers={"Authorization": f"Bearer {key}"})
    assert report.status_code == 404 and "no quality report" in report.json()["error"]["message"]

    check = {
        "type": "string_check",
        "name": "right",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "ilike",
    }
    config = {"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True}
    evaluation = sdk.evals.create(**eval_body(data_source_config=config, testing_criteria=[check]))
    prompt = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}
    run = sdk.evals.runs.create(
        evaluation.id, data_source=completions_source(model_id, uploaded.id, input_messages=prompt)
    )
    assert run.status == "queued"

    # The same file cannot train a job: it is not preference data.
    job = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": model_id, "training_file": uploaded.id},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert job.status_code == 400 and job.json()["error"]["param"] == "training_file"


def test_an_item_file_cannot_feed_a_preference_grader(sdk: openai.OpenAI, model_id: str) -> None:
    uploaded = sdk.files.create(file=("questions.jsonl", jsonl(list(QUESTIONS))), purpose="evals")
    evaluation = sdk.evals.create(**eval_body(testing_criteria=[{"type": "preference", "name": "p"}]))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.evals.runs.create(evaluation.id, data_source=completions_source(model_id, uploaded.id))
    assert caught.value.param == "data_source.source.id" and "not preference data" in caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"question": "a"}\n[1, 2]\n', "line 2: expected a JSON object"),
        (b'{"item": "text"}\n', 'line 1: "item" must be an object'),
        (b'{"a": NaN}\n', "line 1: not valid JSON"),
        (b"not json\n{}\nnope\n", "2 invalid lines: line 1: not valid JSON"),
        (b"\n\n", "the file has no items"),
    ],
)
def test_bad_item_files_are_refused_whole(
    sdk: openai.OpenAI, client: TestClient, key: str, body: bytes, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.files.create(file=("bad.jsonl", io.BytesIO(body)), purpose="evals")
    assert message in caught.value.message and caught.value.param == "file"
    assert sdk.files.list().data == []
    assert client.app.state.alignd.store.list("files/") == []  # type: ignore[attr-defined]
