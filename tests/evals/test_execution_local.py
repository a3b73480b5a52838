"""Eval runs through the local launcher, end to end: a live server's controller launches
`python -m alignd_trainer.evaluate`, which fetches its spec and reports graded items with its run's
token; the openai SDK reads the run, its results and its output items.

- `score_model` judged by a registered model (SmolLM2) through the server's own /v1/chat/completions;
- a cancel of an in-progress run stops its evaluator;
- a lost run (its process killed) is launched again as a second attempt, which completes it.
"""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from alignd.jobs.lifecycle import RunEndReason
from tests.evals.live import TERMINAL, Live, judged_server, until
from tests.evals.scenarios import ITEM_SCHEMA, completions, judged_criterion, questions

pytestmark = pytest.mark.slow


def says_something(live: Live) -> str:
    evaluation = live.client().evals.create(
        name="says something",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=[
            {
                "type": "string_check",
                "name": "not empty",
                "input": "{{sample.output_text}}",
                "reference": "",
                "operation": "ne",
            }
        ],
    )
    return evaluation.id


@pytest.fixture
def live(tmp_path: Path, tiny_model_dir: Path, smollm2_dir: Path) -> Iterator[Live]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # evaluators inherit it: one thread each on a shared box
        with judged_server(tmp_path / "alignd", {"tiny": tiny_model_dir, "smollm2": smollm2_dir}) as server:
            yield server


def launched_pid(live: Live, run_id: str, attempt: int = 1) -> int:
    def ref() -> str | None:
        rows = live.attempts(run_id)
        return rows[attempt - 1].launcher_ref if len(rows) >= attempt else None

    return int(until(ref, f"attempt {attempt} of {run_id} is launched"))


def test_score_model_is_judged_by_a_registered_model(live: Live) -> None:
    client = live.client()
    evaluation = client.evals.create(
        name="judged",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=[judged_criterion()],
    )
    run = client.evals.runs.create(evaluation.id, data_source=completions("tiny", questions(4), 6))
    run = until(
        lambda: (r := client.evals.runs.retrieve(run.id, eval_id=evaluation.id)).status in TERMINAL and r,
        "the judged run ends",
    )
    assert run.status == "completed", run.error
    assert run.result_counts.total == 4
    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id).data
    assert len(items) == 4
    for item in items:
        [result] = item.results
        exchange = result.sample
        # The judge really answered: the registered model's reply is on every result, and its score
        # (the first number of the reply) is in the grader's range.
        assert exchange is not None and exchange["model"] == "smollm2" and exchange["output"][0]["content"]
        assert 0 <= result.score <= 10


def test_a_cancelled_run_stops_its_evaluator(live: Live) -> None:
    client = live.client()
    eval_id = says_something(live)
    run = client.evals.runs.create(eval_id, data_source=completions("tiny", questions(200), 64))
    pid = launched_pid(live, run.id)

    cancelled = client.evals.runs.cancel(run.id, eval_id=eval_id)
    assert cancelled.id == run.id
    final = until(
        lambda: (r := client.evals.runs.retrieve(run.id, eval_id=eval_id)).status in TERMINAL and r,
        "the cancelled run ends",
    )
    assert final.status == "canceled"
    [attempt] = live.attempts(run.id)
    assert attempt.end_reason is RunEndReason.cancelled and attempt.token_hash is None
    until(lambda: not _alive(pid), "the evaluator exits", timeout=60)


def test_a_lost_run_is_launched_again_and_completes(live: Live) -> None:
    client = live.client()
    eval_id = says_something(live)
    run = client.evals.runs.create(eval_id, data_source=completions("tiny", questions(6), 4))
    os.killpg(launched_pid(live, run.id), signal.SIGKILL)

    final = until(
        lambda: (r := client.evals.runs.retrieve(run.id, eval_id=eval_id)).status in TERMINAL and r,
        "the retried run ends",
    )
    assert final.status == "completed", final.error
    assert final.result_counts.total == 6
    progress = final.model_extra["alignd"]
    assert (progress["attempt"], progress["items_graded"], progress["items_total"]) == (2, 6, 6)
    [listed] = [r for r in client.evals.runs.list(eval_id) if r.id == run.id]
    assert listed.model_extra["alignd"]["attempt"] == 2
    first, second = live.attempts(run.id)
    assert first.end_reason is RunEndReason.lost
    assert second.attempt == 2 and second.end_reason is RunEndReason.succeeded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
