"""Evals API tests: the real app in-process (TestClient) on SQLite and on Postgres, driven through the
official openai SDK with strict response validation (the SDK's http client is the TestClient, so every
response is parsed by the SDK's own models).

Runs are not executed here (that is the controller's eval step): tests play the executor by calling
`alignd.evals.service`'s functions directly against the app's database and store.
"""

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from alignd.deps import AppState
from alignd.jobs.lifecycle import JobStatus
from alignd.models import JobModel
from tests.api.conftest import backend, client, db_url, key, model_id, postgres, settings
from tests.api.helpers import bearer, new_project_key

__all__ = ["backend", "client", "db_url", "key", "model_id", "postgres", "settings"]

PAIRS = [
    {"prompt": "Name a fruit.", "chosen": "Apple, please.", "rejected": "Dog."},
    {"prompt": "Name a colour.", "chosen": "Blue, please.", "rejected": "Seven."},
    {"prompt": "Name a planet.", "chosen": "Mars, please.", "rejected": "Soup."},
]
ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string"},
        "chosen": {"type": "string"},
        "rejected": {"type": "string"},
    },
    "required": ["prompt", "chosen", "rejected"],
}


def sdk_client(client: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=key,
        http_client=client,
        max_retries=0,
        _strict_response_validation=True,
    )


@pytest.fixture
def sdk(client: TestClient, key: str) -> openai.OpenAI:
    return sdk_client(client, key)


@pytest.fixture
def state(client: TestClient) -> AppState:
    app_state: AppState = client.app.state.alignd  # type: ignore[attr-defined]
    return app_state


@pytest.fixture
def session(state: AppState) -> Iterator[Session]:
    with state.sessions() as db_session:
        yield db_session


def upload(client: TestClient, key: str, rows: list[dict[str, Any]], name: str = "pairs.jsonl") -> str:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    response = client.post(
        "/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.fixture
def pairs_file(client: TestClient, key: str) -> str:
    return upload(client, key, PAIRS)


def eval_body(**overrides: Any) -> dict[str, Any]:
    """A valid eval: a string check on the sample and a preference grader."""
    body: dict[str, Any] = {
        "name": "polite",
        "data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
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
        "metadata": {"team": "a"},
    }
    return body | overrides


def completions_source(model: str, file_id: str, **overrides: Any) -> dict[str, Any]:
    source: dict[str, Any] = {
        "type": "completions",
        "model": model,
        "source": {"type": "file_id", "id": file_id},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.prompt}}"}]},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 16, "top_p": 1, "seed": 7},
    }
    return source | overrides


def succeeded_job(state: AppState, client: TestClient, key: str, model: str, file_id: str) -> str:
    """A job created through the API and marked succeeded with an `ft:` model, as the controller would;
    returns the fine-tuned model's name."""
    response = client.post(
        "/v1/fine_tuning/jobs", json={"model": model, "training_file": file_id}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    tuned = f"ft:{model}:polite:{job_id}"
    with state.sessions() as db_session:
        job = db_session.get_one(JobModel, job_id)
        job.status = JobStatus.succeeded
        job.fine_tuned_model = tuned
        db_session.add(job)
        db_session.commit()
    return tuned


__all__ += ["new_project_key"]
