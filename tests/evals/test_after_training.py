"""`alignd.evals` in job creation: the evals must exist in the job's project and the job needs held-out
pairs to run them on; a valid request keeps them on the job (the controller starts the runs on success,
tests/evals/test_dpo_style_sdk.py)."""

import openai
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from alignd.models import JobModel
from tests.api.helpers import bearer, new_project_key
from tests.evals.conftest import eval_body, upload


def create_job(client: TestClient, key: str, **body: object) -> tuple[int, dict[str, object]]:
    response = client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key))
    return response.status_code, response.json()


def test_a_job_keeps_the_evals_it_runs_after_training(
    client: TestClient, sdk: openai.OpenAI, key: str, model_id: str, pairs_file: str, session: Session
) -> None:
    evaluation = sdk.evals.create(**eval_body())
    status, job = create_job(
        client,
        key,
        model=model_id,
        training_file=pairs_file,
        validation_file=pairs_file,
        alignd={"resources": {"gpus": 0}, "evals": [evaluation.id]},
    )
    assert status == 200, job
    row = session.get_one(JobModel, job["id"])
    assert row.request["evals"] == [{"eval_id": evaluation.id}]


@pytest.mark.parametrize(
    ("evals", "validation", "param"),
    [
        (["eval_missing"], True, "alignd.evals.0.eval_id"),
        ([{"eval_id": "ok"}], False, "validation_file"),
        ([{"eval_id": "ok", "input_messages": {"type": "template", "template": []}}], True, "alignd"),
    ],
)
def test_bad_evals_are_refused_naming_the_field(
    client: TestClient,
    sdk: openai.OpenAI,
    key: str,
    model_id: str,
    pairs_file: str,
    evals: list[object],
    validation: bool,
    param: str,
) -> None:
    evaluation = sdk.evals.create(**eval_body())
    evals = [
        {**e, "eval_id": evaluation.id} if isinstance(e, dict) and e.get("eval_id") == "ok" else e
        for e in evals
    ]
    status, body = create_job(
        client,
        key,
        model=model_id,
        training_file=pairs_file,
        **({"validation_file": pairs_file} if validation else {}),
        alignd={"resources": {"gpus": 0}, "evals": evals},
    )
    assert status == 400, body
    assert str(body["error"]["param"]).startswith(param), body  # type: ignore[index]


def test_another_projects_eval_is_unknown(
    client: TestClient, sdk: openai.OpenAI, model_id: str, pairs_file: str, key: str
) -> None:
    evaluation = sdk.evals.create(**eval_body())
    other = new_project_key(client, "other")
    file_id = upload(client, other, [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 3)
    status, body = create_job(
        client,
        other,
        model=model_id,
        training_file=file_id,
        validation_file=file_id,
        alignd={"resources": {"gpus": 0}, "evals": [evaluation.id]},
    )
    assert status == 400 and body["error"]["param"] == "alignd.evals.0.eval_id", body  # type: ignore[index]
