"""The synchronous `openai.OpenAI` client against alignd: files, DPO jobs, events, checkpoints, pause and
resume, errors, and the adapter download, each with strict response validation and without."""

import io
import json
import secrets
import tarfile
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.api.helpers import ADMIN_KEY
from tests.sdk.conftest import (
    ALIGND_OPTIONS,
    MODEL,
    TRAINING,
    Server,
    TrainedJob,
    alignd_status,
    jsonl,
)

STRICT = pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@STRICT
def test_files_round_trip(idle: Server, preference_file: Path, strict: bool) -> None:
    client = idle.client(idle.project_key(_name("files")), strict=strict)
    uploaded = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "fine-tune", "processed")
    assert uploaded.filename == "preferences.jsonl"
    assert uploaded.bytes == preference_file.stat().st_size
    assert (uploaded.model_extra or {})["alignd"]["format"] == "openai"
    assert (uploaded.model_extra or {})["alignd"]["rows"] == 2000
    assert client.files.wait_for_processing(uploaded.id, poll_interval=0.1).status == "processed"

    head = preference_file.read_bytes()[:2000].rsplit(b"\n", 1)[0]
    small = [client.files.create(file=(f"small-{i}.jsonl", head), purpose="fine-tune") for i in range(2)]
    first_page = client.files.list(limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    listed = [f.id for f in client.files.list(limit=2)]  # auto-pagination over two pages
    assert listed == [small[1].id, small[0].id, uploaded.id]
    oldest_first = client.files.list(limit=2, order="asc", purpose="fine-tune")
    assert [f.id for f in oldest_first] == [uploaded.id, small[0].id, small[1].id]
    assert list(client.files.list(purpose="fine-tune-results")) == []

    retrieved = client.files.retrieve(uploaded.id)
    assert (retrieved.id, retrieved.bytes, retrieved.created_at) == (
        uploaded.id,
        uploaded.bytes,
        uploaded.created_at,
    )
    assert client.files.content(uploaded.id).read() == preference_file.read_bytes()

    deleted = client.files.delete(small[0].id)
    assert (deleted.id, deleted.deleted, deleted.object) == (small[0].id, True, "file")
    with pytest.raises(openai.NotFoundError, match=f"no file with id '{small[0].id}'"):
        client.files.retrieve(small[0].id)
    assert [f.id for f in client.files.list()] == [small[1].id, uploaded.id]


@STRICT
def test_jobs_create_list_filter_cancel(idle: Server, preference_file: Path, strict: bool) -> None:
    client = idle.client(idle.project_key(_name("jobs"), quota_concurrent_jobs=10), strict=strict)
    training = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    jobs = [
        client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 1}}},
            metadata={"team": team, "index": str(i)},
            extra_body={"alignd": ALIGND_OPTIONS},
        )
        for i, team in enumerate(["search", "ads", "search"])
    ]
    job = jobs[0]
    assert (job.object, job.status, job.model, job.training_file) == (
        "fine_tuning.job",
        "queued",
        MODEL,
        training.id,
    )
    assert job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    assert job.method.dpo.hyperparameters.beta == 0.25
    assert job.hyperparameters.n_epochs == 1
    assert job.metadata == {"team": "search", "index": "0"}
    spec = (job.model_extra or {})["alignd"]["spec"]
    assert spec["lora"]["r"] == 4 and spec["resources"]["gpus"] == 0

    page = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in page.data] == [jobs[2].id] and page.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1)] == [j.id for j in reversed(jobs)]
    search = client.fine_tuning.jobs.list(metadata={"team": "search"}, limit=1)
    assert [j.id for j in search] == [jobs[2].id, jobs[0].id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "ads", "index": "1"})] == [
        jobs[1].id
    ]
    assert list(client.fine_tuning.jobs.list(metadata={"team": "nobody"})) == []

    # Extensions can also ride inside `method` itself (the SDK passes unknown keys through).
    with_extensions: Any = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, **TRAINING}}}
    extended = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        method=with_extensions,
        seed=3,
        extra_headers={"Idempotency-Key": "sdk-extended"},
    )
    again = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training.id,
        method={"type": "dpo"},
        extra_headers={"Idempotency-Key": "sdk-extended"},
    )
    assert again.id == extended.id and extended.seed == 3
    hyperparameters = (extended.model_extra or {})["alignd"]["spec"]["hyperparameters"]
    extensions = {k: hyperparameters[k] for k in TRAINING}
    assert extensions == TRAINING | {"loss_type": ["sigmoid"]}, "the later `beta` in the dict wins"

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages == ["Job cancelled by the user", f"Created fine-tuning job: {job.id}"]
    with pytest.raises(openai.ConflictError, match="is cancelled; it cannot be cancelled"):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.ConflictError, match="is queued; it cannot be paused"):
        client.fine_tuning.jobs.pause(jobs[1].id)
    with pytest.raises(openai.ConflictError, match="is queued; it cannot be resumed"):
        client.fine_tuning.jobs.resume(jobs[1].id)
    with pytest.raises(openai.NotFoundError, match="has no trained weights yet"):
        client.get(f"/fine_tuning/jobs/{jobs[1].id}/artifacts/adapter", cast_to=httpx.Response)


@STRICT
def test_errors_have_the_right_class_and_message(
    idle: Server, preference_file: Path, openai_rows: list[dict[str, Any]], strict: bool
) -> None:
    key = idle.project_key(_name("errors"))
    client = idle.client(key, strict=strict)
    training = client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    dpo: Any = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}

    bad_row = dict(openai_rows[1])
    del bad_row["non_preferred_output"]
    with pytest.raises(openai.BadRequestError) as bad_data:
        client.files.create(file=("bad.jsonl", jsonl([openai_rows[0], bad_row])), purpose="fine-tune")
    assert bad_data.value.status_code == 400 and bad_data.value.code == "invalid_file"
    assert "line 2" in bad_data.value.message and "non_preferred_output" in bad_data.value.message
    with pytest.raises(openai.BadRequestError, match="line 1: not valid JSON"):
        client.files.create(file=("bad.jsonl", b"{oops\n"), purpose="fine-tune")

    with pytest.raises(openai.BadRequestError, match="unknown model 'gpt-4o-mini'") as unknown_model:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training.id, method=dpo)
    assert (unknown_model.value.param, unknown_model.value.code) == ("model", "model_not_found")
    with pytest.raises(openai.BadRequestError, match="no file with id 'file-nope'") as unknown_file:
        client.fine_tuning.jobs.create(model=MODEL, training_file="file-nope", method=dpo)
    assert unknown_file.value.param == "training_file"
    with pytest.raises(openai.BadRequestError, match="greater than 0") as bad_beta:
        client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}},
        )
    assert bad_beta.value.param == "method.dpo.hyperparameters.beta"
    with pytest.raises(openai.BadRequestError) as bad_epochs:
        client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": True}}},  # JSON true is no count
        )
    assert bad_epochs.value.param is not None and "n_epochs" in bad_epochs.value.param

    with pytest.raises(openai.NotFoundError, match="no fine-tuning job with id 'ftjob-nope'"):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.checkpoints.list("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")

    # Another project's ids look exactly like unknown ones.
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=dpo)
    other = idle.client(idle.project_key(_name("other")), strict=strict)
    with pytest.raises(openai.NotFoundError, match=f"no fine-tuning job with id '{job.id}'"):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError, match=f"no file with id '{training.id}'"):
        other.files.retrieve(training.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(training.id)
    with pytest.raises(openai.BadRequestError, match=f"no file with id '{training.id}'"):
        other.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=dpo)

    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided") as bad_key:
        idle.client("sk-alignd-not-a-key", strict=strict).files.list()
    assert bad_key.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError, match="use a project API key"):
        idle.client(ADMIN_KEY, strict=strict).fine_tuning.jobs.list()


@STRICT
def test_quotas_raise_rate_limit_errors(idle: Server, preference_file: Path, strict: bool) -> None:
    tiny_quota = idle.client(idle.project_key(_name("bytes"), quota_stored_bytes=1000), strict=strict)
    with pytest.raises(openai.RateLimitError, match="storage quota exceeded") as stored:
        tiny_quota.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    assert stored.value.status_code == 429 and stored.value.code == "quota_exceeded"
    assert list(tiny_quota.files.list()) == [], "a refused upload leaves nothing behind"

    one_job = idle.client(idle.project_key(_name("one-job"), quota_concurrent_jobs=1), strict=strict)
    training = one_job.files.create(file=preference_file.open("rb"), purpose="fine-tune")
    dpo: Any = {"type": "dpo"}
    first = one_job.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=dpo)
    with pytest.raises(openai.RateLimitError, match="concurrent job quota reached"):
        one_job.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=dpo)
    one_job.fine_tuning.jobs.cancel(first.id)
    assert (
        one_job.fine_tuning.jobs.create(model=MODEL, training_file=training.id, method=dpo).status == "queued"
    )


# ---- the job trained end to end (shared fixture) --------------------------------------------------------


@pytest.mark.slow
def test_a_job_runs_pauses_resumes_and_succeeds(trained_job: TrainedJob) -> None:
    job = trained_job.job
    assert job.status == "succeeded", trained_job.seen
    assert ("queued", "paused") in trained_job.seen, "a paused job reads as queued in OpenAI's terms"
    assert 0 < trained_job.paused_at_step < TRAINING["max_steps"], "paused mid-run, then resumed from there"
    assert trained_job.seen[-1] == ("succeeded", "succeeded")
    assert job.fine_tuned_model is not None and job.fine_tuned_model.endswith(job.id)
    assert job.trained_tokens is not None and job.trained_tokens > 0
    assert job.finished_at is not None and job.finished_at >= job.created_at
    assert job.error is None and job.estimated_finish is None
    assert (job.seed, job.metadata) == (7, {"suite": "sdk", "run": "lifecycle"})
    assert job.method is not None and job.method.dpo is not None
    assert job.method.dpo.hyperparameters is not None
    assert (job.method.dpo.hyperparameters.beta, job.method.dpo.hyperparameters.batch_size) == (0.5, 16)
    assert (job.model_extra or {})["alignd"]["attempt"] == 2


@pytest.mark.slow
@STRICT
def test_reading_a_finished_job(live: Server, trained_job: TrainedJob, strict: bool) -> None:
    client = live.client(trained_job.key, strict=strict)
    job = client.fine_tuning.jobs.retrieve(trained_job.job.id)
    assert (job.status, alignd_status(job)) == ("succeeded", "succeeded")
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"suite": "sdk"})] == [job.id]

    pages = list(client.fine_tuning.jobs.list_events(job.id, limit=20).iter_pages())
    assert len(pages) >= 4, "enough events for several pages"
    events = [e for page in pages for e in page.data]
    assert [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=20)] == [e.id for e in events]
    assert len({e.id for e in events}) == len(events)
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"
    assert messages[-1] == f"Created fine-tuning job: {job.id}"
    for expected in (
        "Pause requested: saving a checkpoint",
        "Resumed: queued to continue from the last checkpoint",
    ):
        assert expected in messages
    assert messages.index("Resumed: queued to continue from the last checkpoint") < messages.index(
        "Pause requested: saving a checkpoint"
    ), "newest first"
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all(isinstance(e.data, dict) and "train_loss" in e.data for e in metrics)

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=1))
    assert [c.step_number for c in checkpoints] == [TRAINING["max_steps"], trained_job.paused_at_step]
    final = checkpoints[0]
    assert (final.object, final.fine_tuning_job_id) == ("fine_tuning.job.checkpoint", job.id)
    assert final.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{final.step_number}"
    assert final.metrics.train_loss is not None and final.metrics.step == final.step_number

    models = [m.id for m in client.models.list()]
    assert MODEL in models and job.fine_tuned_model in models
    assert client.models.retrieve(job.fine_tuned_model).owned_by == job.organization_id
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError, match="no model 'ft:none'"):
        client.models.retrieve("ft:none")


@pytest.mark.slow
def test_the_adapter_downloads_and_loads_with_peft(
    live: Server, trained_job: TrainedJob, tiny_model_dir: Path, tmp_path: Path
) -> None:
    client = live.client(trained_job.key)
    response = client.get(f"/fine_tuning/jobs/{trained_job.job.id}/artifacts/adapter", cast_to=httpx.Response)
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(tmp_path, filter="data")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    trained = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert trained and any(torch.count_nonzero(p) > 0 for p in trained), "LoRA B starts at zero; DPO moved it"
