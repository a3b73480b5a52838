"""SFT then DPO through the official `openai` SDK on the live server (issue 14's "done when"): a supervised
job on a chat file succeeds; a DPO job naming its `ft:` model succeeds and demonstrably started from the
SFT weights, with them as its reference; a job started from a checkpoint id starts from that checkpoint;
and every wrong start is a 400 naming the field."""

import io
import json
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from alignd_trainer.score import score_file
from alignd_trainer.synthetic import chat_rows, preference_rows
from tests.sdk.conftest import MODEL, TERMINAL, Server, jsonl, until

pytestmark = pytest.mark.slow

LORA: dict[str, Any] = {"training_type": "lora", "lora": {"r": 4, "alpha": 8}, "resources": {"gpus": 0}}
SFT_METHOD: dict[str, Any] = {
    "type": "supervised",
    "supervised": {
        "hyperparameters": {"batch_size": 16, "n_epochs": 1, "learning_rate": 3e-2, "save_steps": 2}
    },
}
DPO_PAIRS = 8
DPO_METHOD: dict[str, Any] = {
    "type": "dpo",
    # One step over every pair: step 1's logps/chosen is the mean over the file of the starting model's
    # log-probs of the chosen answers, which scoring the file reproduces (packed batches give the padded
    # batches' log-probs; the trainer checks that before it packs).
    "dpo": {"hyperparameters": {"batch_size": DPO_PAIRS, "max_steps": 1}},
}


@dataclass
class Chain:
    key: str
    client: openai.OpenAI
    sft: FineTuningJob
    dpo: FineTuningJob
    chat_file: str
    pairs_file: str
    pairs_path: Path


def _finish(client: openai.OpenAI, job_id: str) -> FineTuningJob:
    job: FineTuningJob = until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and j,
        f"job {job_id} finished",
        timeout=300,
    )
    assert job.status == "succeeded", (
        job.error,
        [e.message for e in client.fine_tuning.jobs.list_events(job_id)],
    )
    return job


def _metrics(server: Server, key: str, job_id: str) -> list[dict[str, Any]]:
    """The job's train series (alignd's metrics extension)."""
    response = httpx.get(
        f"{server.base_url}/fine_tuning/jobs/{job_id}/metrics", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    train: list[dict[str, Any]] = response.json()["train"]
    return train


def _first_step(server: Server, key: str, job_id: str) -> dict[str, float]:
    values: dict[str, float] = _metrics(server, key, job_id)[0]["values"]
    return values


def _download(client: openai.OpenAI, path: str, into: Path) -> Path:
    response = client.get(path, cast_to=httpx.Response)
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    return into


def _mean_chosen_logps(model_dir: Path | str, data: Path) -> float:
    out = io.StringIO()
    score_file(model_dir=str(model_dir), data=str(data), out=out, batch_size=DPO_PAIRS)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return sum(row["chosen_logps"] for row in rows) / len(rows)


@pytest.fixture(scope="module")
def chain(live: Server, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    key = live.project_key(f"sft-chain-{secrets.token_hex(3)}")
    client = live.client(key)
    chat = client.files.create(file=("chat.jsonl", jsonl(chat_rows(64, seed=21))), purpose="fine-tune")
    assert (chat.model_extra or {})["alignd"]["format"] == "chat"
    pairs_path = tmp_path_factory.mktemp("chain") / "pairs.jsonl"
    pairs_path.write_bytes(jsonl(preference_rows(DPO_PAIRS, seed=22, fmt="openai")))
    pairs = client.files.create(file=pairs_path.open("rb"), purpose="fine-tune")

    sft = client.fine_tuning.jobs.create(
        model=MODEL, training_file=chat.id, suffix="sft", method=SFT_METHOD, extra_body={"alignd": LORA}
    )
    assert sft.method is not None and sft.method.type == "supervised"
    assert sft.method.supervised is not None and sft.method.supervised.hyperparameters.batch_size == 16
    sft = _finish(client, sft.id)
    assert sft.fine_tuned_model == f"ft:{MODEL}:{sft.organization_id}:sft:{sft.id}"

    dpo = client.fine_tuning.jobs.create(
        model=sft.fine_tuned_model,
        training_file=pairs.id,
        suffix="dpo",
        method=DPO_METHOD,
        extra_body={"alignd": LORA | {"merged_weights": False}},
    )
    assert dpo.model == sft.fine_tuned_model, "the job echoes the model it was created with"
    spec = (dpo.model_extra or {})["alignd"]["spec"]
    assert spec["init"] == {
        "source": sft.fine_tuned_model,
        "layers": [{"kind": "adapter", "location": f"jobs/{sft.id}/adapter"}],
    }
    dpo = _finish(client, dpo.id)
    # Named after the base model, not the ft: model it continued.
    assert dpo.fine_tuned_model == f"ft:{MODEL}:{dpo.organization_id}:dpo:{dpo.id}"
    return Chain(key, client, sft, dpo, chat.id, pairs.id, pairs_path)


def test_sft_then_dpo_starts_from_the_sft_model_and_uses_it_as_reference(
    live: Server, chain: Chain, tiny_model_dir: Path, tmp_path: Path
) -> None:
    sft_loss = [p["values"]["loss"] for p in _metrics(live, chain.key, chain.sft.id)]
    assert sft_loss[-1] < sft_loss[0], sft_loss

    adapter = (
        _download(chain.client, f"/fine_tuning/jobs/{chain.sft.id}/artifacts/adapter", tmp_path) / "adapter"
    )
    sft_mean = _mean_chosen_logps(adapter, chain.pairs_path)
    base_mean = _mean_chosen_logps(tiny_model_dir, chain.pairs_path)
    assert abs(sft_mean - base_mean) > 0.05, "SFT changed the model"

    first = _first_step(live, chain.key, chain.dpo.id)
    # The policy at step 1 is the SFT model: its log-probs are the SFT adapter's, not the base's ...
    assert first["logps/chosen"] == pytest.approx(sft_mean, abs=1e-3)
    # ... and so is the reference: policy == reference, so the implicit rewards are zero.
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-4)


def test_a_job_starts_from_a_checkpoint_id(live: Server, chain: Chain, tmp_path: Path) -> None:
    checkpoints = chain.client.fine_tuning.jobs.checkpoints.list(chain.sft.id).data
    early = min(checkpoints, key=lambda c: c.step_number)
    assert early.step_number == 2 and len(checkpoints) == 2
    job = chain.client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=chain.pairs_file,
        method=DPO_METHOD,
        extra_body={"alignd": LORA | {"merged_weights": False, "init_from_checkpoint": early.id}},
    )
    spec = (job.model_extra or {})["alignd"]["spec"]
    assert spec["init"]["source"] == early.id
    assert spec["init"]["layers"][0]["location"] == f"jobs/{chain.sft.id}/checkpoints/step-00000002/adapter"
    _finish(chain.client, job.id)

    archive = f"/fine_tuning/jobs/{chain.sft.id}/artifacts/checkpoint/{early.step_number}"
    adapter = _download(chain.client, archive, tmp_path) / "step-2" / "adapter"
    final = (
        _download(chain.client, f"/fine_tuning/jobs/{chain.sft.id}/artifacts/adapter", tmp_path) / "adapter"
    )
    early_mean = _mean_chosen_logps(adapter, chain.pairs_path)
    assert abs(early_mean - _mean_chosen_logps(final, chain.pairs_path)) > 1e-3, "step 2 is not the end"
    assert _first_step(live, chain.key, job.id)["logps/chosen"] == pytest.approx(early_mean, abs=1e-3)


def test_wrong_starts_and_mismatched_files_are_400s_naming_the_field(live: Server, chain: Chain) -> None:
    client = chain.client
    ft = chain.sft.fine_tuned_model
    assert ft is not None

    def refused(param: str, **create: Any) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(**create)
        assert caught.value.param == param, caught.value.message
        return caught.value

    sft_on_pairs = refused("training_file", model=MODEL, training_file=chain.pairs_file, method=SFT_METHOD)
    assert chain.pairs_file in sft_on_pairs.message and "line 1" in sft_on_pairs.message
    dpo_on_chat = refused("training_file", model=MODEL, training_file=chain.chat_file, method=DPO_METHOD)
    assert chain.chat_file in dpo_on_chat.message and "line 1" in dpo_on_chat.message
    refused(
        "validation_file",
        model=MODEL,
        training_file=chain.chat_file,
        validation_file=chain.pairs_file,
        method=SFT_METHOD,
    )

    unknown = refused("model", model=ft + "x", training_file=chain.pairs_file, method=DPO_METHOD)
    assert unknown.code == "model_not_found"
    refused("model", model=f"{ft}:ckpt-step-3", training_file=chain.pairs_file, method=DPO_METHOD)
    missing = refused(
        "alignd.init_from_checkpoint",
        model=MODEL,
        training_file=chain.pairs_file,
        method=DPO_METHOD,
        extra_body={"alignd": {"init_from_checkpoint": "ftckpt-nope"}},
    )
    assert missing.code == "checkpoint_not_found"
    checkpoint = client.fine_tuning.jobs.checkpoints.list(chain.sft.id).data[0]
    refused(
        "model",
        model="another-model",
        training_file=chain.pairs_file,
        method=DPO_METHOD,
        extra_body={"alignd": {"init_from_checkpoint": checkpoint.id}},
    )
    beta = refused(
        "method.supervised.hyperparameters.beta",
        model=MODEL,
        training_file=chain.chat_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}},
    )
    assert "beta" in beta.message

    # Another project sees neither the ft: model nor the checkpoint.
    other = live.client(live.project_key(f"sft-other-{secrets.token_hex(3)}"))
    pairs = other.files.create(file=chain.pairs_path.open("rb"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as foreign_model:
        other.fine_tuning.jobs.create(model=ft, training_file=pairs.id, method=DPO_METHOD)
    assert (foreign_model.value.param, foreign_model.value.code) == ("model", "model_not_found")
    with pytest.raises(openai.BadRequestError) as foreign_checkpoint:
        other.fine_tuning.jobs.create(
            model=MODEL,
            training_file=pairs.id,
            method=DPO_METHOD,
            extra_body={"alignd": {"init_from_checkpoint": checkpoint.id}},
        )
    assert foreign_checkpoint.value.param == "alignd.init_from_checkpoint"


def test_the_chat_file_report(live: Server, chain: Chain) -> None:
    report = chain.client.get(f"/files/{chain.chat_file}/report", cast_to=httpx.Response).json()
    assert report["kind"] == "chat" and report["rows"] == 64
    assert report["no_assistant_turn"]["count"] == 0 and report["lengths"]["turns"]["max"] == 2
