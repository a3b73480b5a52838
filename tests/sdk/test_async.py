"""`openai.AsyncOpenAI` against alignd: the same flows as the synchronous client, awaited."""

import asyncio
import io
import secrets
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM

from tests.sdk.conftest import (
    ALIGND_OPTIONS,
    MODEL,
    TERMINAL,
    TRAINING,
    Server,
    TrainedJob,
    alignd_status,
    jsonl,
)

T = TypeVar("T")
STRICT = pytest.mark.parametrize("strict", [True, False], ids=["strict", "default"])


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def _until(condition: Callable[[], Awaitable[T | None]], what: str, *, timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while not (result := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.2)
    return result


@pytest.mark.asyncio
@STRICT
async def test_async_files_jobs_and_errors(
    idle: Server, preference_file: Path, openai_rows: list[dict[str, Any]], strict: bool
) -> None:
    async with idle.async_client(
        idle.project_key(_name("async"), quota_concurrent_jobs=2), strict=strict
    ) as client:
        uploaded = await client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
        assert (uploaded.status, uploaded.bytes) == ("processed", preference_file.stat().st_size)
        assert (await client.files.wait_for_processing(uploaded.id, poll_interval=0.1)).status == "processed"
        second = await client.files.create(file=("two.jsonl", jsonl(openai_rows[:8])), purpose="fine-tune")
        assert [f.id async for f in client.files.list(limit=1)] == [second.id, uploaded.id]
        assert (await client.files.retrieve(second.id)).filename == "two.jsonl"
        assert (await client.files.content(second.id)).read() == jsonl(openai_rows[:8])
        assert (await client.files.delete(second.id)).deleted
        with pytest.raises(openai.NotFoundError, match=f"no file with id '{second.id}'"):
            await client.files.retrieve(second.id)

        jobs: list[FineTuningJob] = []
        for team in ("search", "ads"):
            jobs.append(
                await client.fine_tuning.jobs.create(
                    model=MODEL,
                    training_file=uploaded.id,
                    method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
                    metadata={"team": team},
                    extra_body={"alignd": ALIGND_OPTIONS},
                )
            )
        assert [j.id async for j in client.fine_tuning.jobs.list(limit=1)] == [jobs[1].id, jobs[0].id]
        assert [j.id async for j in client.fine_tuning.jobs.list(metadata={"team": "ads"})] == [jobs[1].id]
        cancelled = await client.fine_tuning.jobs.cancel(jobs[0].id)
        assert cancelled.status == "cancelled"
        events = [e.message async for e in client.fine_tuning.jobs.list_events(jobs[0].id, limit=1)]
        assert events == ["Job cancelled by the user", f"Created fine-tuning job: {jobs[0].id}"]
        assert [c async for c in client.fine_tuning.jobs.checkpoints.list(jobs[0].id)] == []
        with pytest.raises(openai.ConflictError, match="it cannot be paused"):
            await client.fine_tuning.jobs.pause(jobs[1].id)

        with pytest.raises(openai.BadRequestError, match="line 1: not valid JSON"):
            await client.files.create(file=("bad.jsonl", b"nope\n"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError, match="unknown model 'nope'"):
            await client.fine_tuning.jobs.create(
                model="nope", training_file=uploaded.id, method={"type": "dpo"}
            )
        with pytest.raises(openai.BadRequestError) as bad:
            await client.fine_tuning.jobs.create(
                model=MODEL,
                training_file=uploaded.id,
                method={"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 0}}},
            )
        assert bad.value.param == "method.dpo.hyperparameters.batch_size"
        with pytest.raises(openai.NotFoundError, match="no fine-tuning job with id 'ftjob-nope'"):
            await client.fine_tuning.jobs.retrieve("ftjob-nope")
        await client.fine_tuning.jobs.create(model=MODEL, training_file=uploaded.id, method={"type": "dpo"})
        with pytest.raises(openai.RateLimitError, match="concurrent job quota reached"):
            await client.fine_tuning.jobs.create(
                model=MODEL, training_file=uploaded.id, method={"type": "dpo"}
            )

    async with idle.async_client("sk-alignd-wrong", strict=strict) as stranger:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided"):
            await stranger.fine_tuning.jobs.list()


@pytest.mark.slow
@pytest.mark.asyncio
@STRICT
async def test_async_reads_and_downloads_a_finished_job(
    live: Server, trained_job: TrainedJob, tiny_model_dir: Path, tmp_path: Path, strict: bool
) -> None:
    async with live.async_client(trained_job.key, strict=strict) as client:
        job = await client.fine_tuning.jobs.retrieve(trained_job.job.id)
        assert job.status == "succeeded" and job.fine_tuned_model == trained_job.job.fine_tuned_model
        events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=20)]
        first_page = await client.fine_tuning.jobs.list_events(job.id, limit=20)
        assert first_page.has_more and len(events) > 3 * 20
        assert events[0].message == "The job has successfully completed"
        assert events[-1].message == f"Created fine-tuning job: {job.id}"
        steps = [c.step_number async for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)]
        assert steps == [TRAINING["max_steps"], trained_job.paused_at_step]

        response = await client.get(f"/fine_tuning/jobs/{job.id}/artifacts/adapter", cast_to=httpx.Response)
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(tmp_path, filter="data")
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter"
    )
    assert isinstance(model.peft_config["default"], LoraConfig) and model.peft_config["default"].r == 4


@pytest.mark.slow
@pytest.mark.asyncio
async def test_async_pause_resume_cancel_a_running_job(live: Server, preference_file: Path) -> None:
    async with live.async_client(live.project_key(_name("async-live"))) as client:
        training = await client.files.create(file=preference_file.open("rb"), purpose="fine-tune")
        job = await client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=training.id,
            method={"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 16}}},
            extra_body={
                "method": {
                    "type": "dpo",
                    "dpo": {"hyperparameters": {"batch_size": 16, "max_steps": 100000}},
                },
                "alignd": ALIGND_OPTIONS,
            },
        )

        async def status() -> str:
            return alignd_status(await client.fine_tuning.jobs.retrieve(job.id))

        async def stepped() -> bool:
            assert await status() not in TERMINAL
            page = await client.fine_tuning.jobs.list_events(job.id, limit=5)
            return any(e.type == "metrics" for e in page.data)

        await _until(stepped, "the trainer reported a step")
        paused = await client.fine_tuning.jobs.pause(job.id)
        assert (paused.status, alignd_status(paused)) == ("running", "pausing")
        await _until(lambda: _is(status, "paused"), "the job paused")
        assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "queued"
        checkpoint = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
        assert len(checkpoint) == 1 and checkpoint[0].step_number > 0

        resumed = await client.fine_tuning.jobs.resume(job.id)
        assert (resumed.status, alignd_status(resumed)) == ("queued", "queued")
        await _until(lambda: _is(status, "running"), "the resumed job ran")
        cancelled = await client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled"
        messages = [e.message async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert messages[0] == "Job cancelled by the user"
        assert "Job paused; resume continues from the last checkpoint" in messages


async def _is(status: Callable[[], Awaitable[str]], expected: str) -> bool:
    return await status() == expected
