"""`/v1/chat/completions` through the official SDK (strict response validation): SmolLM2 registered as a
base model answers a question, `ft:` models of a LoRA and a full-weight job reply as their weights do
locally, sampling is deterministic for a seed, and bad requests get OpenAI's errors."""

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from alignd.server import free_port, start_serve
from alignd_trainer.generation import ChatGenerator, Sampling
from tests.api.helpers import ADMIN_KEY, bearer
from tests.sdk.conftest import MODEL, TERMINAL, Server, until

SMOLLM2 = "smollm2-chat"
PROMPT = [{"role": "user", "content": "name a fruit"}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_completion_tokens": 12}


@pytest.fixture(scope="module")
def chat_key(live: Server, smollm2_dir: Path) -> str:
    live.admin("POST", "/v1/models", {"id": SMOLLM2, "source": str(smollm2_dir)})
    return live.project_key("sdk-chat")


def _train(live: Server, key: str, preference_file: Path, alignd: dict[str, Any]) -> FineTuningJob:
    client = live.client(key)
    training = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    hyperparameters = {"batch_size": 8, "learning_rate": 2e-3, "max_steps": 12, "beta": 0.5}
    created = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        suffix="chat",
        extra_body={
            "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
            "alignd": {"resources": {"gpus": 0}, **alignd},
        },
    )
    job = until(
        lambda: (j := client.fine_tuning.jobs.retrieve(created.id)).status in TERMINAL and j,
        "the chat job finished",
        timeout=240,
    )
    assert job.status == "succeeded", job.error
    return job


@pytest.fixture(scope="module")
def lora_job(live: Server, chat_key: str, preference_file: Path) -> FineTuningJob:
    return _train(live, chat_key, preference_file, {"training_type": "lora", "lora": {"r": 8, "alpha": 64}})


@pytest.fixture(scope="module")
def full_job(live: Server, chat_key: str, preference_file: Path) -> FineTuningJob:
    return _train(live, chat_key, preference_file, {"training_type": "full"})


def _weights(live: Server, key: str, job_id: str, into: Path) -> Path:
    """The job's trained weights as a user downloads them (artifacts/adapter, a tar.gz)."""
    archive = into / "weights.tar.gz"
    response = httpx.get(f"{live.url}/v1/fine_tuning/jobs/{job_id}/artifacts/adapter", headers=bearer(key))
    assert response.status_code == 200, response.text
    archive.write_bytes(response.content)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    [directory] = [p for p in into.iterdir() if p.is_dir()]
    return directory


def test_smollm2_answers_a_question(live: Server, chat_key: str) -> None:
    client = live.client(chat_key)

    completion = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_completion_tokens=24,
    )

    [choice] = completion.choices
    assert "Paris" in (choice.message.content or "")
    assert completion.object == "chat.completion" and completion.model == SMOLLM2
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_sampling_with_a_seed_repeats_and_max_tokens_bounds_the_reply(live: Server, chat_key: str) -> None:
    client = live.client(chat_key)
    asked: dict[str, Any] = {"temperature": 1.0, "top_p": 0.95, "seed": 11, "max_tokens": 8}

    first = client.chat.completions.create(model=SMOLLM2, messages=PROMPT, **asked)
    again = client.chat.completions.create(model=SMOLLM2, messages=PROMPT, **asked)

    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage is not None and first.usage.completion_tokens <= 8
    if first.choices[0].finish_reason == "length":
        assert first.usage.completion_tokens == 8


def test_a_lora_model_replies_as_base_plus_adapter(
    live: Server, chat_key: str, lora_job: FineTuningJob, tiny_model_dir: Path, tmp_path: Path
) -> None:
    client = live.client(chat_key)
    assert lora_job.fine_tuned_model is not None
    adapter = _weights(live, chat_key, lora_job.id, tmp_path)
    local = ChatGenerator.load(tiny_model_dir, adapter_dir=adapter)
    local_greedy = Sampling(temperature=0, max_new_tokens=12)
    expected = local.generate([PROMPT], local_greedy)[0]
    base = ChatGenerator.load(tiny_model_dir).generate([PROMPT], Sampling(temperature=0, max_new_tokens=12))[
        0
    ]
    assert expected != base, "the adapter should change the tiny model's greedy reply"

    tuned = client.chat.completions.create(model=lora_job.fine_tuned_model, messages=PROMPT, **GREEDY)
    untuned = client.chat.completions.create(model=MODEL, messages=PROMPT, **GREEDY)

    assert tuned.choices[0].message.content == expected
    assert untuned.choices[0].message.content == base


def test_a_full_weight_model_replies_as_its_weights(
    live: Server, chat_key: str, full_job: FineTuningJob, tmp_path: Path
) -> None:
    assert full_job.fine_tuned_model is not None
    weights = _weights(live, chat_key, full_job.id, tmp_path)
    expected = ChatGenerator.load(weights).generate([PROMPT], Sampling(temperature=0, max_new_tokens=12))[0]

    completion = live.client(chat_key).chat.completions.create(
        model=full_job.fine_tuned_model, messages=PROMPT, **GREEDY
    )

    assert completion.choices[0].message.content == expected


def test_errors_name_the_field(live: Server, chat_key: str, lora_job: FineTuningJob) -> None:
    client = live.client(chat_key)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=PROMPT)
    assert missing.value.code == "model_not_found" and "no-such-model" in missing.value.message
    # Another project's fine-tuned model looks the same as one that does not exist.
    assert lora_job.fine_tuned_model is not None
    with pytest.raises(openai.NotFoundError):
        live.client(live.project_key("sdk-chat-other")).chat.completions.create(
            model=lora_job.fine_tuned_model, messages=PROMPT
        )
    for field, value in (("stream", True), ("n", 2), ("max_completion_tokens", 10**6), ("temperature", 3)):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=SMOLLM2, messages=PROMPT, **{field: value})
        assert refused.value.param == field, (field, refused.value.message)
    with pytest.raises(openai.BadRequestError) as streaming:
        client.chat.completions.create(model=SMOLLM2, messages=PROMPT, stream=True)
    assert "streaming is not supported" in streaming.value.message


@pytest.fixture
def server_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`alignd serve` in a process where `import torch` fails, as in an image without the trainer extra."""
    blocker = tmp_path / "no-torch" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocker.parent}:{os.environ.get('PYTHONPATH', '')}")
    port = free_port()
    server = start_serve(tmp_path / "data", admin_key=ADMIN_KEY, port=port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_a_server_without_torch_answers_501_naming_the_extra(
    server_without_torch: str, tiny_model_dir: Path
) -> None:
    url = server_without_torch
    admin = bearer(ADMIN_KEY)
    registered = httpx.post(
        f"{url}/v1/models", json={"id": "m", "source": str(tiny_model_dir)}, headers=admin
    )
    assert registered.status_code == 200, registered.text
    project = httpx.post(f"{url}/v1/admin/projects", json={"name": "p"}, headers=admin).json()
    key = httpx.post(f"{url}/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key["value"], max_retries=0)

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="m", messages=PROMPT)

    assert refused.value.status_code == 501
    assert "trainer extra" in refused.value.message and "torch" in refused.value.message
