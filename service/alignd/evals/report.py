"""The report of a finished eval run: a JSONL file in the project's files, downloadable through
`GET /v1/files/{id}/content` (the run's `report_url`).

Line 1 is the summary (`"type": "summary"`: the eval, the run, its model, status, error and figures);
then one line per item in data source order (`"type": "item"`: the item, what the model answered, and
each criterion's verdict). Like a job's results file, it has purpose "fine-tune-results" (a purpose the
SDK's file object knows), and an id derived from the run's id and the `lock_token` of the finisher's
claim: writing it again after a crash overwrites the same object, and a finisher that lost its race
writes to a key no row points at (the sweeper removes it), never over the winner's report. Its row is
inserted with the status change that finishes the run.
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from alignd.contract.eval_items import OutputItem
from alignd.evals.results import item_status
from alignd.evals.schemas import CriterionResult, ModelUsage, ResultCounts
from alignd.files import RESULTS_PURPOSE
from alignd.models import EvalRunModel, FileModel, unix_now_us
from alignd.storage import ObjectStore


def report_file_id(run_id: str, lock_token: str) -> str:
    """The same id whenever it is computed for one claim of a run, so a repeated write cannot make a
    second file."""
    return "file-" + hashlib.sha256(f"eval-report:{run_id}:{lock_token}".encode()).hexdigest()[:24]


def report_jsonl(
    *,
    run: EvalRunModel,
    status: str,
    error: dict[str, str] | None,
    items: Sequence[OutputItem],
    counts: ResultCounts,
    criteria: Sequence[CriterionResult],
    usage: Sequence[ModelUsage],
) -> bytes:
    summary: dict[str, Any] = {
        "type": "summary",
        "eval_id": run.eval_id,
        "run_id": run.id,
        "name": run.name,
        "model": run.model,
        "status": status,
        "error": error,
        "result_counts": counts.model_dump(),
        "per_testing_criteria_results": [c.model_dump() for c in criteria],
        "per_model_usage": [u.model_dump() for u in usage],
    }
    lines = [summary]
    for item in items:
        lines.append(
            {
                "type": "item",
                "datasource_item_id": item.datasource_item_id,
                "status": item_status(item.sample, item.results).value,
                "item": item.datasource_item,
                "output_text": "".join(m.content for m in item.sample.output),
                "results": [r.model_dump(exclude_none=True) for r in item.results],
            }
        )
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


def store_report(store: ObjectStore, run: EvalRunModel, data: bytes) -> FileModel:
    """Put the report in the store and return its file row, not yet added: the caller adds it in the
    transaction that finishes the run."""
    file_id = report_file_id(run.id, run.lock_token)
    key = f"files/{file_id}"
    store.put_bytes(key, data, content_type="application/jsonl")
    now_us = unix_now_us()
    return FileModel(
        id=file_id,
        project_id=run.project_id,
        filename=f"{run.id}-report.jsonl",
        purpose=RESULTS_PURPOSE,
        bytes=len(data),
        rows=data.count(b"\n"),
        sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key,
        created_at=now_us // 1_000_000,
        created_at_us=now_us,
    )
