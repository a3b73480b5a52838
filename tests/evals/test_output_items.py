"""The executor's side, played by calling `alignd.evals.service` directly: claim a run, record graded
items (again, as a retried attempt would), finish it; users then read the figures, the output items and
the report through the SDK."""

import json

import openai
import pytest
from sqlmodel import Session

from alignd.contract.eval_items import (
    GraderResult,
    OutputItem,
    Sample,
    SampleError,
    SampleMessage,
    SampleUsage,
)
from alignd.deps import AppState
from alignd.errors import Conflict, InvalidRequest
from alignd.evals import service
from alignd.evals.status import EvalRunStatus
from alignd.models import EvalRunModel
from tests.evals.conftest import PAIRS, completions_source, eval_body


def graded(index: int, *, says_please: bool, prefers: bool, error: bool = False) -> OutputItem:
    reply = "Apple, please." if says_please else "Dog."
    return OutputItem(
        datasource_item_id=index,
        datasource_item=PAIRS[index],
        sample=Sample(
            input=[SampleMessage(role="user", content=PAIRS[index]["prompt"])],
            output=[SampleMessage(role="assistant", content=reply)],
            model="tiny",
            finish_reason="stop",
            seed=7,
            max_completion_tokens=16,
            usage=SampleUsage(prompt_tokens=5, completion_tokens=3, total_tokens=8),
            error=SampleError(code="generation_failed", message="out of memory") if error else SampleError(),
        ),
        results=[
            GraderResult(
                name="says please", type="string_check", passed=says_please, score=float(says_please)
            ),
            GraderResult(
                name="prefers chosen",
                type="preference",
                passed=prefers,
                score=0.4 if prefers else -0.2,
                alignd={"margin": 0.4 if prefers else -0.2},
            ),
        ],
    )


def claimed_run(
    sdk: openai.OpenAI, session: Session, model_id: str, pairs_file: str
) -> tuple[str, EvalRunModel]:
    evaluation = sdk.evals.create(**eval_body())
    created = sdk.evals.runs.create(evaluation.id, data_source=completions_source(model_id, pairs_file))
    run = session.get_one(EvalRunModel, created.id)
    assert service.mark_in_progress(session, run)
    assert not service.mark_in_progress(session, run), "a run is claimed once"
    return evaluation.id, run


def test_recorded_items_are_listed_and_counted(
    sdk: openai.OpenAI, session: Session, state: AppState, model_id: str, pairs_file: str
) -> None:
    eval_id, run = claimed_run(sdk, session, model_id, pairs_file)
    assert sdk.evals.runs.retrieve(run.id, eval_id=eval_id).status == "in_progress"

    # A first attempt records two items; a retried attempt reports item 1 again, differently, and item 2.
    service.record_output_items(
        session, run, [graded(0, says_please=True, prefers=True), graded(1, says_please=False, prefers=True)]
    )
    service.record_output_items(
        session,
        run,
        [graded(1, says_please=True, prefers=False), graded(2, says_please=True, prefers=True, error=True)],
    )

    items = sdk.evals.runs.output_items.list(run.id, eval_id=eval_id)
    assert [i.datasource_item_id for i in items.data] == [0, 1, 2]
    assert [i.status for i in items.data] == ["pass", "fail", "error"]
    first = items.data[0]
    assert first.object == "eval.run.output_item" and first.run_id == run.id and first.eval_id == eval_id
    assert first.datasource_item == PAIRS[0]
    assert first.sample.output[0].content == "Apple, please." and first.sample.usage.total_tokens == 8
    assert [(r.name, r.passed, r.score) for r in first.results] == [
        ("says please", True, 1.0),
        ("prefers chosen", True, 0.4),
    ]
    assert (first.results[1].model_extra or {})["alignd"] == {"margin": 0.4}
    assert (
        sdk.evals.runs.output_items.retrieve(first.id, eval_id=eval_id, run_id=run.id).model_dump()
        == first.model_dump()
    )

    assert [
        i.datasource_item_id for i in sdk.evals.runs.output_items.list(run.id, eval_id=eval_id, status="fail")
    ] == [1]
    assert [
        i.datasource_item_id for i in sdk.evals.runs.output_items.list(run.id, eval_id=eval_id, limit=1)
    ] == [0, 1, 2]
    assert [
        i.datasource_item_id
        for i in sdk.evals.runs.output_items.list(run.id, eval_id=eval_id, order="desc").data
    ] == [2, 1, 0]

    # Items are the data source's: an index past its end, or a result for no criterion, is refused.
    with pytest.raises(InvalidRequest, match="has 3 items"):
        service.record_output_items(
            session,
            run,
            [graded(0, says_please=True, prefers=True).model_copy(update={"datasource_item_id": 3})],
        )
    stray = graded(0, says_please=True, prefers=True)
    stray.results.append(GraderResult(name="unknown", type="string_check", passed=True, score=1.0))
    with pytest.raises(InvalidRequest, match="not testing criteria"):
        service.record_output_items(session, run, [stray])

    assert service.finish_run(session=session, store=state.store, run=run, status=EvalRunStatus.completed)
    assert not service.finish_run(session=session, store=state.store, run=run, status=EvalRunStatus.failed)

    done = sdk.evals.runs.retrieve(run.id, eval_id=eval_id)
    assert done.status == "completed"
    assert done.result_counts.model_dump() == {"total": 3, "passed": 1, "failed": 1, "errored": 1}
    assert [c.model_dump() for c in done.per_testing_criteria_results] == [
        {"testing_criteria": "says please", "passed": 2, "failed": 0},
        {"testing_criteria": "prefers chosen", "passed": 1, "failed": 1},
    ]
    assert [u.model_dump(by_alias=True) for u in done.per_model_usage] == [
        {
            "model_name": "tiny",
            "invocation_count": 3,
            "prompt_tokens": 15,
            "completion_tokens": 9,
            "total_tokens": 24,
            "cached_tokens": 0,
        }
    ]

    # The report: a JSONL file of the project's, downloadable through /v1/files.
    report_id = (done.model_extra or {})["alignd"]["report_file_id"]
    assert done.report_url == f"http://testserver/v1/files/{report_id}/content"
    file = sdk.files.retrieve(report_id)
    assert file.purpose == "fine-tune-results" and file.filename == f"{run.id}-report.jsonl"
    lines = [json.loads(line) for line in sdk.files.content(report_id).text.splitlines()]
    summary, *rows = lines
    assert summary["type"] == "summary" and summary["run_id"] == run.id and summary["status"] == "completed"
    assert summary["result_counts"] == {"total": 3, "passed": 1, "failed": 1, "errored": 1}
    assert [(r["datasource_item_id"], r["status"], r["output_text"]) for r in rows] == [
        (0, "pass", "Apple, please."),
        (1, "fail", "Apple, please."),
        (2, "error", "Apple, please."),
    ]
    assert file.bytes == len(sdk.files.content(report_id).content)

    # A finished run takes no more items.
    with pytest.raises(Conflict, match="completed"):
        service.record_output_items(session, run, [graded(0, says_please=False, prefers=False)])


def test_cancel_in_progress_waits_for_the_executor(
    sdk: openai.OpenAI, session: Session, state: AppState, model_id: str, pairs_file: str
) -> None:
    eval_id, run = claimed_run(sdk, session, model_id, pairs_file)
    asked = sdk.evals.runs.cancel(run.id, eval_id=eval_id)
    assert asked.status == "in_progress" and (asked.model_extra or {})["alignd"]["cancel_requested"]
    assert session.get_one(EvalRunModel, run.id, populate_existing=True).desired == "cancel"

    session.refresh(run)
    service.record_output_items(session, run, [graded(0, says_please=True, prefers=True)])
    assert service.finish_run(session=session, store=state.store, run=run, status=EvalRunStatus.canceled)
    done = sdk.evals.runs.retrieve(run.id, eval_id=eval_id)
    assert done.status == "canceled" and done.result_counts.total == 1 and done.report_url


def test_a_failed_run_reports_its_error(
    sdk: openai.OpenAI, session: Session, state: AppState, model_id: str, pairs_file: str
) -> None:
    eval_id, run = claimed_run(sdk, session, model_id, pairs_file)
    error = {"code": "model_load_failed", "message": "could not load the model"}
    assert service.finish_run(
        session=session, store=state.store, run=run, status=EvalRunStatus.failed, error=error
    )
    done = sdk.evals.runs.retrieve(run.id, eval_id=eval_id)
    assert done.status == "failed" and done.error.model_dump() == error
    assert done.result_counts.total == 0
    assert sdk.evals.runs.output_items.list(run.id, eval_id=eval_id).data == []
