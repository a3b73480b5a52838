"""The estimate through a live server (uvicorn on loopback, no controller), driven by the openai SDK:
`POST /v1/fine_tuning/jobs/estimate` and `alignd.dry_run`, checked against counts made here, in the test,
with the tiny model's tokenizer; the truncation share stored on the files' reports; the overlap event of
a created job; the same 400s as job creation; and 501 on a server without the trainer's packages."""

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from alignd.cli import app
from alignd.config import Settings
from alignd.contract import JobSpec, TrainingMethod, TruncationMode, parse_preference_line
from alignd.contract.chat import parse_chat_line
from alignd.server import BackgroundServer, free_port, start_serve
from alignd_trainer.chat_data import tokenize_chat
from alignd_trainer.data import tokenize_examples
from alignd_trainer.distributed import DistInfo
from alignd_trainer.loop import DPORecipe
from alignd_trainer.model import load_tokenizer
from alignd_trainer.report import StdoutReporter
from alignd_trainer.sft import SFTRecipe
from alignd_trainer.synthetic import preference_rows, tool_rows
from tests.api.helpers import ADMIN_KEY, bearer

MODEL = "tiny-estimate"
MAX_LENGTH = 48
SHORT = [
    {"prompt": f"Question {i}: name a fruit.", "chosen": " An apple.", "rejected": " A dog."}
    for i in range(9)
]
LONG = [
    {"prompt": f"Question {i}: describe a fruit.", "chosen": " It is sweet and red." * 12, "rejected": " No."}
    for i in range(9, 12)
]
TRAINING = SHORT + LONG
VALIDATION = [
    TRAINING[0],  # the same pair
    TRAINING[1],  # the same pair
    {
        "prompt": "question 2 NAME a fruit",
        "chosen": " A pear.",
        "rejected": " A cat.",
    },  # the same prompt, normalised
    {"prompt": "Name a colour.", "chosen": " Red.", "rejected": " Seven."},
]
THROUGHPUT = {
    "cpu": {"lora": 100.0, "full": 40.0, "params": 1_000_000, "source": "the test's table"},
    "big-gpu": {"lora": 10_000.0, "full": 5_000.0, "params": 2_000_000},
}


class Live:
    def __init__(self, url: str, tiny_model_dir: Path) -> None:
        self.url = url
        self.tiny_model_dir = tiny_model_dir

    def admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(self.url + path, json=body, headers=bearer(ADMIN_KEY), timeout=60)
        assert response.is_success, response.text
        data: dict[str, Any] = response.json()
        return data

    def client(self) -> openai.OpenAI:
        """An SDK client for a new project of its own, so each test sees only its own jobs."""
        project = self.admin("/v1/admin/projects", {"name": f"p{time.monotonic_ns()}"})
        key = self.admin(f"/v1/admin/projects/{project['id']}/api_keys", {"name": "sdk"})
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key["value"], max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Live]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("estimate"),
        admin_key=ADMIN_KEY,
        public_url=url,
        run_controller=False,
        estimate_throughput=THROUGHPUT,
    )
    with BackgroundServer(settings, "127.0.0.1", port):
        server = Live(url, tiny_model_dir)
        server.admin("/v1/models", {"id": MODEL, "source": str(tiny_model_dir)})
        yield server


def upload(client: openai.OpenAI, rows: list[dict[str, Any]], name: str) -> str:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return client.files.create(file=(name, body), purpose="fine-tune").id


def estimate(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """The README's call: the SDK's generic `post` on the estimate route."""
    result: dict[str, Any] = client.post("/fine_tuning/jobs/estimate", body=body, cast_to=object)
    return result


def job_body(training: str, validation: str | None = None, **hyperparameters: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "training_file": training,
        "validation_file": validation,
        "method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}},
        "alignd": {"resources": {"gpus": 0}},
    }


def trainer_split(tokenizer: Any, row: dict[str, str]) -> tuple[int, int, int]:
    """Tokens of the prompt, chosen and rejected, split as TRL's DPOTrainer splits a standard row: the
    prompt and prompt+completion+EOS tokenized apart, the completion starting where they diverge."""

    def common(a: list[int], b: list[int]) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    prompt = tokenizer(row["prompt"])["input_ids"]
    chosen = tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"]
    rejected = tokenizer(row["prompt"] + row["rejected"] + tokenizer.eos_token)["input_ids"]
    start = min(common(prompt, chosen), common(prompt, rejected))
    return start, len(chosen) - start, len(rejected) - start


def wait_for(what: str, probe: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_estimate_counts_what_the_tokenizer_counts(live: Live) -> None:
    client = live.client()
    training = upload(client, TRAINING, "train.jsonl")
    validation = upload(client, VALIDATION, "valid.jsonl")

    answer = estimate(client, job_body(training, validation, max_length=MAX_LENGTH))

    tokenizer = AutoTokenizer.from_pretrained(live.tiny_model_dir)
    counts = np.array([trainer_split(tokenizer, row) for row in TRAINING])
    prompt, chosen, rejected = counts.T
    assert not (prompt >= MAX_LENGTH).any()  # no pair is dropped: every one is usable
    long_pairs = int((prompt + np.maximum(chosen, rejected) > MAX_LENGTH).sum())
    assert long_pairs == len(LONG)
    trained_per_epoch = int(
        (np.minimum(prompt + chosen, MAX_LENGTH) + np.minimum(prompt + rejected, MAX_LENGTH)).sum()
    )
    assert answer["object"] == "fine_tuning.job.estimate"
    assert answer["job_created"] is False
    train = answer["training"]
    assert (train["file_id"], train["rows"], train["pairs_tokenized"], train["sampled"]) == (
        training,
        12,
        12,
        False,
    )
    assert train["usable_pairs"] == 12
    for name, column in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        stats = train["tokens"][name]
        assert stats["total"] == column.sum(), name
        assert stats["max"] == column.max(), name
        assert stats["p50"] == pytest.approx(np.percentile(column, 50)), name
        assert stats["p95"] == pytest.approx(np.percentile(column, 95)), name
    assert train["tokens"]["trained_per_epoch"] == trained_per_epoch
    assert train["truncation"] == {
        "max_length": MAX_LENGTH,
        "truncation_mode": "keep_start",
        "max_prompt_length": None,
        "truncated_pairs": len(LONG),
        "truncated_share": pytest.approx(len(LONG) / 12),
        "prompt_fills_max_length": 0,
    }
    assert any(f"max_length={MAX_LENGTH}" in warning for warning in answer["warnings"])

    # "auto" as job creation resolves it: 12 pairs give batch_size 8 and 3 epochs.
    assert answer["hyperparameters"]["batch_size"] == 8
    assert answer["hyperparameters"]["n_epochs"] == 3
    steps_per_epoch = -(-12 // 8)
    assert answer["steps"] | {} == {
        "batch_size": 8,
        "n_epochs": 3,
        "shards": 1,
        "max_steps": None,
        "per_epoch": steps_per_epoch,
        "total": 3 * steps_per_epoch,
    }
    assert answer["trained_tokens"] == 3 * trained_per_epoch

    # Durations from the server's table, scaled to the tiny model's size.
    model = AutoModelForCausalLM.from_pretrained(live.tiny_model_dir)
    params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    assert answer["model_parameters"] == params
    durations = {d["profile"]: d for d in answer["durations"]}
    assert set(durations) == set(THROUGHPUT)
    assert durations["cpu"]["selected"] is True
    assert durations["big-gpu"]["selected"] is False
    cpu_rate = 100.0 * 1_000_000 / params
    assert durations["cpu"]["tokens_per_second"] == pytest.approx(cpu_rate)
    assert durations["cpu"]["seconds"] == pytest.approx(3 * trained_per_epoch / cpu_rate)
    assert durations["cpu"]["source"] == "the test's table"
    assert answer["assumptions"]

    # The validation file: its own counts, and its overlap with training.
    assert answer["validation"]["rows"] == 4
    assert answer["overlap"] == {
        "validation_rows": 4,
        "same_prompt": {"count": 3, "example_lines": [1, 2, 3]},
        "same_pair": {"count": 2, "example_lines": [1, 2]},
        "same_prompt_share": 0.75,
        "same_pair_share": 0.5,
    }
    assert any("share a prompt with the training file" in warning for warning in answer["warnings"])

    # The training file's quality report now carries the truncation share at this model and max_length.
    report = client.get(f"/files/{training}/report", cast_to=object)
    assert report["truncation"] == {
        "model": MODEL,
        "max_length": MAX_LENGTH,
        "truncated_share": pytest.approx(len(LONG) / 12),
        "truncation_mode": "keep_start",
        "truncated_pairs": len(LONG),
        "sampled": False,
    }
    assert client.fine_tuning.jobs.list().data == []


def test_dry_run_answers_the_estimate_and_creates_no_job(live: Live) -> None:
    client = live.client()
    training = upload(client, TRAINING, "train.jsonl")

    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=MODEL,
        training_file=training,
        method={"type": "dpo", "dpo": {"hyperparameters": {"max_length": MAX_LENGTH}}},
        extra_body={"alignd": {"dry_run": True, "resources": {"gpus": 0}}},
    )

    dry_run = raw.http_response.json()  # as the README reads it
    assert dry_run["object"] == "fine_tuning.job.estimate"
    assert dry_run == estimate(client, job_body(training, max_length=MAX_LENGTH))
    assert client.fine_tuning.jobs.list().data == []
    assert dry_run["overlap"] is None and dry_run["validation"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"model": "no-such-model"},
        {"training_file": "file-missing"},
        {"validation_file": "file-missing"},
        {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}},
        {"alignd": {"resources": {"gpus": 0}, "training_type": "full", "merged_weights": True}},
        {"model": "ft:tiny-estimate:proj:x:ftjob-none"},
        {"method": {"type": "supervised"}},  # a preference file where SFT needs chat rows
    ],
    ids=[
        "unknown-model",
        "missing-training-file",
        "missing-validation-file",
        "bad-beta",
        "merged-full",
        "unknown-ft-model",
        "sft-on-pairs",
    ],
)
def test_bad_input_gets_the_same_error_as_job_creation(live: Live, change: dict[str, Any]) -> None:
    client = live.client()
    body = job_body(upload(client, TRAINING, "train.jsonl")) | change
    sdk_fields = {name: value for name, value in body.items() if name != "alignd"}
    errors = []
    for call in (
        lambda: client.fine_tuning.jobs.create(**sdk_fields, extra_body={"alignd": body["alignd"]}),
        lambda: estimate(client, body),
        lambda: client.fine_tuning.jobs.create(
            **sdk_fields, extra_body={"alignd": body["alignd"] | {"dry_run": True}}
        ),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        errors.append((caught.value.status_code, caught.value.body))
    assert errors[0] == errors[1] == errors[2]
    assert client.fine_tuning.jobs.list().data == []


def test_a_created_job_fills_the_truncation_share_and_reports_the_overlap(live: Live) -> None:
    client = live.client()
    training = upload(client, TRAINING, "train.jsonl")
    validation = upload(client, VALIDATION, "valid.jsonl")
    files = {training: TRAINING, validation: VALIDATION}
    assert client.get(f"/files/{training}/report", cast_to=object)["truncation"] is None

    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        validation_file=validation,
        method={"type": "dpo", "dpo": {"hyperparameters": {"max_length": 40}}},
        extra_body={"alignd": {"resources": {"gpus": 0}}},
    )

    tokenizer = AutoTokenizer.from_pretrained(live.tiny_model_dir)
    for file_id, rows in files.items():
        truncation = wait_for(
            f"the truncation share of {file_id}",
            lambda file_id=file_id: client.get(f"/files/{file_id}/report", cast_to=object)["truncation"],
        )
        counts = np.array([trainer_split(tokenizer, row) for row in rows])
        expected = (counts[:, 0] + counts[:, 1:].max(axis=1) > 40).sum() / len(rows)
        assert truncation["model"] == MODEL
        assert truncation["max_length"] == 40
        assert truncation["truncated_share"] == pytest.approx(expected)
    assert 0 < client.get(f"/files/{training}/report", cast_to=object)["truncation"]["truncated_share"] < 1

    events = wait_for(
        "the overlap event",
        lambda: [
            e for e in client.fine_tuning.jobs.list_events(job.id).data if "share a prompt" in e.message
        ],
    )
    assert events[0].level == "warn"
    assert events[0].data["overlap"]["same_pair"]["count"] == 2  # type: ignore[index]
    assert events[0].message.startswith("3 of 4 validation pairs share a prompt with the training file")


def test_without_the_trainer_packages_the_estimate_is_501_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose Python cannot import torch or alignd_trainer (packages that refuse to import shadow
    them: the API server image has neither) still checks the request, then answers 501."""
    hidden = tmp_path / "hidden"
    for package in ("torch", "alignd_trainer"):  # the API image has neither
        (hidden / package).mkdir(parents=True)
        (hidden / package / "__init__.py").write_text(
            f"raise ImportError('{package} is not installed here')\n"
        )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_serve(tmp_path / "data", admin_key=ADMIN_KEY, port=port, stderr=subprocess.PIPE)
    try:
        admin = bearer(ADMIN_KEY)
        project = httpx.post(f"{url}/v1/admin/projects", json={"name": "no-torch"}, headers=admin).json()
        key = httpx.post(f"{url}/v1/admin/projects/{project['id']}/api_keys", json={}, headers=admin).json()
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        assert httpx.post(
            f"{url}/v1/models", json={"id": "m", "source": str(model_dir)}, headers=admin
        ).is_success
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key["value"], max_retries=0)
        training = upload(client, TRAINING, "train.jsonl")

        with pytest.raises(openai.BadRequestError):
            estimate(client, job_body(training) | {"model": "no-such-model"})
        with pytest.raises(openai.APIStatusError) as caught:
            estimate(client, job_body(training) | {"model": "m"})
        assert caught.value.status_code == 501
        assert "pip install 'alignd[trainer]'" in caught.value.message
        # Job creation does not need the trainer: the job is created, only its truncation share is not.
        job = client.fine_tuning.jobs.create(
            model="m", training_file=training, extra_body={"alignd": {"resources": {"gpus": 0}}}
        )
        assert job.status == "queued"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def test_conversational_rows_are_counted_through_the_chat_template(live: Live) -> None:
    client = live.client()
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Name fruit number {i}."}],
            "chosen": [{"role": "assistant", "content": "An apple." * (1 + i)}],
            "rejected": [{"role": "assistant", "content": "A dog."}],
        }
        for i in range(5)
    ]
    training = upload(client, rows, "chat.jsonl")

    answer = estimate(client, job_body(training))

    tokenizer = AutoTokenizer.from_pretrained(live.tiny_model_dir)

    def ids(messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
        return list(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]
        )

    totals = np.zeros(3, dtype=int)
    for row in rows:
        prompt = ids(row["prompt"], add_generation_prompt=True)
        full = [ids(row["prompt"] + row[side]) for side in ("chosen", "rejected")]
        start = min(
            next((i for i, (x, y) in enumerate(zip(prompt, seq, strict=False)) if x != y), len(prompt))
            for seq in full
        )
        totals += [start, len(full[0]) - start, len(full[1]) - start]
    counted = answer["training"]["tokens"]
    assert [counted[name]["total"] for name in ("prompt", "chosen", "rejected")] == totals.tolist()
    assert answer["training"]["usable_pairs"] == 5


def test_usable_pairs_and_steps_are_what_the_trainer_sets_up(live: Live, tmp_path: Path) -> None:
    """The trainer's own setup on the same rows and spec: the pairs it keeps after its drop rules, and its
    schedule, where a last partial batch smaller than the micro-batch count does not run."""
    normal = [{"prompt": f"Q{i}: name a fruit.", "chosen": " Apple.", "rejected": " Dog."} for i in range(11)]
    long_prompts = [{"prompt": "fill " * 80, "chosen": " Yes.", "rejected": " No."} for _ in range(2)]
    disputed = [
        {"prompt": f"Q{i}: a colour?", "chosen": " Red.", "rejected": " Dog.", "agreement": 0.2}
        for i in range(2)
    ]
    rows = normal + long_prompts + disputed
    hyperparameters = {
        "batch_size": 5,
        "n_epochs": 2,
        "gradient_accumulation_steps": 2,
        "max_length": MAX_LENGTH,
    }
    client = live.client()
    training = upload(client, rows, "train.jsonl")

    answer = estimate(
        client,
        job_body(training, **hyperparameters)
        | {"alignd": {"resources": {"gpus": 0}, "agreement_threshold": 0.5}},
    )

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = JobSpec(
        model=str(live.tiny_model_dir),
        training_file=str(path),
        output_dir=str(tmp_path / "out"),
        agreement_threshold=0.5,
        resources={"gpus": 0},
        hyperparameters=hyperparameters,
    )
    recipe = DPORecipe(spec, StdoutReporter(io.StringIO()), DistInfo())
    recipe.setup()
    assert len(recipe.train_data.pairs) == answer["training"]["usable_pairs"] == 11
    assert (
        recipe.train_data.dropped_prompt_too_long
        == answer["training"]["truncation"]["prompt_fills_max_length"]
        == 2
    )
    assert recipe.train_data.dropped_low_agreement == answer["training"]["dropped_low_agreement"] == 2
    assert (recipe.steps_per_epoch, recipe.total_steps) == (
        answer["steps"]["per_epoch"],
        answer["steps"]["total"],
    )
    assert (
        answer["steps"]["per_epoch"] == 2
    )  # 11 pairs in batches of 5: the last pair alone cannot feed 2 shards
    assert (
        answer["training"]["truncation"]["truncated_pairs"] == 2
    )  # the two dropped pairs count as truncated


def test_the_cli_estimates_with_the_arguments_of_jobs_create(live: Live) -> None:
    client = live.client()
    training = upload(client, TRAINING, "train.jsonl")
    hyperparameters = {"max_length": MAX_LENGTH}

    options = [
        "--hyperparameters",
        json.dumps(hyperparameters),
        "--alignd",
        json.dumps({"resources": {"gpus": 0}}),
    ]
    result = CliRunner().invoke(
        app,
        ["jobs", "estimate", MODEL, training, *options],
        env={"ALIGND_API_URL": live.url, "ALIGND_API_KEY": client.api_key},
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == estimate(client, job_body(training, **hyperparameters))
    assert client.fine_tuning.jobs.list().data == []


def test_a_model_without_a_usable_tokenizer_is_a_400_naming_it(live: Live, tmp_path: Path) -> None:
    model_dir = tmp_path / "no-tokenizer"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # registration accepts it; nothing here can tokenize
    live.admin("/v1/models", {"id": "no-tokenizer", "source": str(model_dir)})
    client = live.client()
    training = upload(client, TRAINING, "train.jsonl")

    with pytest.raises(openai.BadRequestError) as caught:
        estimate(client, job_body(training) | {"model": "no-tokenizer"})

    assert caught.value.body["param"] == "model"  # type: ignore[index]
    assert f"cannot load the tokenizer of {model_dir}" in caught.value.message


def test_tool_rows_are_counted_as_the_trainer_renders_them(live: Live, tools_model_dir: Path) -> None:
    """Rows with tools go through the chat template with their tools; a model whose template cannot
    render them gets job creation's 400."""
    live.admin("/v1/models", {"id": "tiny-tools-estimate", "source": str(tools_model_dir)})
    client = live.client()
    rows = preference_rows(4, seed=2, fmt="openai") + tool_rows(6, seed=2)
    training = upload(client, rows, "tools.jsonl")
    body = job_body(training) | {"model": "tiny-tools-estimate"}

    answer = estimate(client, body)

    examples = [parse_preference_line(json.dumps(row), line) for line, row in enumerate(rows, 1)]
    trainer = tokenize_examples(
        load_tokenizer(str(tools_model_dir)),
        examples,
        max_length=1024,
        truncation_mode=TruncationMode.keep_start,
    )
    counted = answer["training"]["tokens"]
    for name, side in (("prompt", "prompt_ids"), ("chosen", "chosen_ids"), ("rejected", "rejected_ids")):
        assert counted[name]["total"] == sum(len(getattr(pair, side)) for pair in trainer.pairs), name
    assert answer["training"]["usable_pairs"] == len(trainer.pairs) == 10

    errors = []
    for call in (
        lambda: client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, extra_body={"alignd": {"resources": {"gpus": 0}}}
        ),
        lambda: estimate(client, job_body(training)),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        errors.append(caught.value.body)
    assert errors[0] == errors[1]
    assert MODEL in errors[0]["message"]  # type: ignore[index]


CHATS = (
    [
        {
            "messages": [
                {"role": "user", "content": f"Name fruit {i}."},
                {"role": "assistant", "content": "Pear."},
            ]
        }
        for i in range(8)
    ]
    + [
        {  # long: truncated, its first answer kept
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Describe fruit {i}."},
                {"role": "assistant", "content": "It is sweet and red. " * 10},
            ]
        }
        for i in range(2)
    ]
    + [
        {  # a long question: truncation (keep_start) cuts the whole answer off, so the trainer drops it
            "messages": [{"role": "user", "content": "fill " * 80}, {"role": "assistant", "content": "Yes."}]
        },
        {  # weight 0 on its only answer: nothing to train on
            "messages": [
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "Hi.", "weight": 0},
            ]
        },
        {  # two answers, the first one context only
            "messages": [
                {"role": "user", "content": "Count to two."},
                {"role": "assistant", "content": "One.", "weight": 0},
                {"role": "user", "content": "Go on."},
                {"role": "assistant", "content": "Two."},
            ]
        },
    ]
)
CHAT_VALIDATION = [
    CHATS[0],  # the same conversation
    {"messages": [{"role": "user", "content": "name FRUIT 1"}, {"role": "assistant", "content": "Fig."}]},
    {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]},
]


def sft_body(training: str, validation: str | None = None, **hyperparameters: Any) -> dict[str, Any]:
    return job_body(training, validation) | {
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    }


def chat_counts(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> np.ndarray:
    """Per row, with the trainer's chat tokenization run here: tokens and trained tokens of the whole
    conversation, and tokens and trained tokens the trainer keeps at `max_length`."""
    out = []
    for index, row in enumerate(rows):
        example = parse_chat_line(json.dumps(row), index + 1)
        whole = tokenize_chat(
            tokenizer, example, index, max_length=10**9, truncation_mode=TruncationMode.keep_start
        )
        cut = tokenize_chat(
            tokenizer, example, index, max_length=max_length, truncation_mode=TruncationMode.keep_start
        )
        out.append((len(whole.input_ids), whole.loss_tokens, len(cut.input_ids), cut.loss_tokens))
    return np.array(out)


def test_a_supervised_estimate_counts_what_the_trainer_tokenizes(live: Live, tmp_path: Path) -> None:
    client = live.client()
    training = upload(client, CHATS, "sft.jsonl")
    validation = upload(client, CHAT_VALIDATION, "sft-valid.jsonl")
    hyperparameters = {"batch_size": 4, "n_epochs": 2, "max_length": MAX_LENGTH}

    answer = estimate(client, sft_body(training, validation, **hyperparameters))

    counts = chat_counts(load_tokenizer(str(live.tiny_model_dir)), CHATS, MAX_LENGTH)
    usable = counts[counts[:, 3] > 0]
    tokens, trained = usable[:, 0], usable[:, 1]
    truncated = int((counts[:, 0] > MAX_LENGTH).sum())
    cut_off = int(((counts[:, 0] > MAX_LENGTH) & (counts[:, 1] > 0) & (counts[:, 3] == 0)).sum())
    assert (len(usable), truncated, cut_off) == (len(CHATS) - 2, 3, 1)  # the rows were built so
    assert answer["method"] == "supervised"
    assert answer["hyperparameters"] == {"batch_size": 4, "learning_rate_multiplier": 1.0, "n_epochs": 2}
    train = answer["training"]
    assert (train["rows"], train["pairs_tokenized"], train["usable_pairs"], train["dropped_untrained"]) == (
        len(CHATS),
        len(CHATS),
        len(usable),
        2,
    )
    assert train["tokens"] is None
    chat = train["chat_tokens"]
    for name, column in (("conversation", tokens), ("trained", trained)):
        assert chat[name] == {
            "total": column.sum(),
            "mean": pytest.approx(column.mean()),
            "p50": pytest.approx(np.percentile(column, 50)),
            "p95": pytest.approx(np.percentile(column, 95)),
            "max": column.max(),
        }, name
    assert chat["trained_per_epoch"] == usable[:, 2].sum()
    assert chat["loss_tokens_per_epoch"] == usable[:, 3].sum()
    assert train["truncation"] == {
        "max_length": MAX_LENGTH,
        "truncation_mode": "keep_start",
        "max_prompt_length": None,
        "truncated_pairs": truncated,
        "truncated_share": pytest.approx(truncated / len(CHATS)),
        "prompt_fills_max_length": cut_off,
    }
    assert any(f"max_length={MAX_LENGTH}" in warning for warning in answer["warnings"])

    # Steps and usable rows: the SFT trainer's own setup on the same file and spec.
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in CHATS))
    spec = JobSpec(
        model=str(live.tiny_model_dir),
        training_file=str(path),
        output_dir=str(tmp_path / "out"),
        method=TrainingMethod.supervised,
        resources={"gpus": 0},
        hyperparameters=hyperparameters,
    )
    recipe = SFTRecipe(spec, StdoutReporter(io.StringIO()), DistInfo())
    recipe.setup()
    assert len(recipe.train_data.pairs) == len(usable)
    assert sum(item.loss_tokens for item in recipe.train_data.pairs) == chat["loss_tokens_per_epoch"]
    assert (answer["steps"]["per_epoch"], answer["steps"]["total"]) == (
        recipe.steps_per_epoch,
        recipe.total_steps,
    )
    assert answer["steps"]["total"] == 2 * -(-len(usable) // 4)
    assert answer["trained_tokens"] == 2 * usable[:, 2].sum()
    durations = {d["profile"]: d for d in answer["durations"]}
    assert durations["cpu"]["seconds"] == pytest.approx(
        answer["trained_tokens"] / durations["cpu"]["tokens_per_second"]
    )

    # Overlap: the same conversation, and the same prompt before the last trained answer (normalised).
    assert answer["validation"]["rows"] == 3
    assert answer["overlap"] == {
        "validation_rows": 3,
        "same_prompt": {"count": 2, "example_lines": [1, 2]},
        "same_pair": {"count": 1, "example_lines": [1]},
        "same_prompt_share": pytest.approx(2 / 3),
        "same_pair_share": pytest.approx(1 / 3),
    }
    assert any(
        warning.startswith("2 of 3 validation conversations share a prompt with the training file")
        for warning in answer["warnings"]
    )

    # The chat file's quality report carries the truncation share now.
    report = client.get(f"/files/{training}/report", cast_to=object)
    assert report["kind"] == "chat"
    assert report["truncation"] == {
        "model": MODEL,
        "max_length": MAX_LENGTH,
        "truncated_share": pytest.approx(truncated / len(CHATS)),
        "truncation_mode": "keep_start",
        "truncated_pairs": truncated,
        "sampled": False,
    }
    assert client.fine_tuning.jobs.list().data == []


def test_a_supervised_dry_run_answers_the_estimate_and_creates_no_job(live: Live) -> None:
    client = live.client()
    training = upload(client, CHATS, "sft.jsonl")

    raw = client.fine_tuning.jobs.with_raw_response.create(
        model=MODEL,
        training_file=training,
        method={"type": "supervised", "supervised": {"hyperparameters": {"max_length": MAX_LENGTH}}},
        extra_body={"alignd": {"dry_run": True, "resources": {"gpus": 0}}},
    )

    dry_run = raw.http_response.json()
    assert dry_run["object"] == "fine_tuning.job.estimate"
    assert dry_run["method"] == "supervised"
    assert dry_run == estimate(client, sft_body(training, max_length=MAX_LENGTH))
    assert client.fine_tuning.jobs.list().data == []


def test_a_created_supervised_job_fills_its_chat_file_truncation_share(live: Live) -> None:
    client = live.client()
    training = upload(client, CHATS, "sft.jsonl")
    assert client.get(f"/files/{training}/report", cast_to=object)["truncation"] is None

    client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        method={"type": "supervised", "supervised": {"hyperparameters": {"max_length": 40}}},
        extra_body={"alignd": {"resources": {"gpus": 0}}},
    )

    truncation = wait_for(
        "the truncation share of the chat file",
        lambda: client.get(f"/files/{training}/report", cast_to=object)["truncation"],
    )
    counts = chat_counts(load_tokenizer(str(live.tiny_model_dir)), CHATS, 40)
    truncated = int((counts[:, 0] > 40).sum())
    assert truncated > 0
    assert truncation == {
        "model": MODEL,
        "max_length": 40,
        "truncated_share": pytest.approx(truncated / len(CHATS)),
        "truncation_mode": "keep_start",
        "truncated_pairs": truncated,
        "sampled": False,
    }
