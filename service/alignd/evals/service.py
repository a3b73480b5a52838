"""Evals and their runs: what users ask (create, read, list, update, delete, cancel) and what the
executor records (a run started, its graded items, its end).

Creating a run only validates it and stores it `queued`; the controller's eval step picks queued runs
up. A run's status changes only here, by compare-and-set on its `lock_token`:

    queued --mark_in_progress--> in_progress --finish_run--> completed | failed | canceled
    queued --request_cancel--> canceled          (nothing was launched: the executor claims a run with
                                                   mark_in_progress before it launches anything)
    in_progress --request_cancel--> desired="cancel"; the executor stops it and calls finish_run

The executor claims a queued run with `mark_in_progress` *before* launching: False means someone else
moved it (a cancel, another controller), so it launches nothing.
"""

import json
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import delete, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.contract.eval_items import GraderResult, OutputItem, Sample, datasource_row
from alignd.db import guarded_update
from alignd.errors import Conflict, InvalidRequest, NotFound
from alignd.evals import checks, report, results
from alignd.evals.quotas import check_run_quota
from alignd.evals.resolve import ResolvedRun, resolve_model
from alignd.evals.schemas import (
    CompletionsDataSource,
    CustomDataSourceConfig,
    EvalCreate,
    EvalUpdate,
    FileContentSource,
    FileIdSource,
    RunCreate,
)
from alignd.evals.status import EvalRunStatus, OutputItemStatus
from alignd.evals.wire import criteria as eval_criteria
from alignd.files import EVALS_PURPOSE, PURPOSE, UPLOAD_PURPOSES, get_file
from alignd.jobs.quotas import lock_project
from alignd.models import (
    EvalModel,
    EvalOutputItemModel,
    EvalRunModel,
    FileModel,
    ProjectModel,
    RunModel,
    new_id,
    new_lock_token,
    unix_now,
    unix_now_us,
)
from alignd.pagination import in_creation_order
from alignd.storage import ObjectStore

Order = Literal["asc", "desc"]
FIRST_LINE_LIMIT = 8 * 1024 * 1024
"""The most bytes read to find a data file's first line (the upload validator's line limit)."""


# ---- evals ---------------------------------------------------------------------------------------------


def create_eval(*, session: Session, project: ProjectModel, request: EvalCreate) -> EvalModel:
    checks.check_eval(request)
    now_us = unix_now_us()
    row = EvalModel(
        project_id=project.id,
        name=request.name or "",
        eval_metadata=request.metadata,
        data_source_config=request.data_source_config.model_dump(mode="json"),
        testing_criteria=[grader.model_dump(mode="json") for grader in request.testing_criteria],
        created_at=now_us // 1_000_000,
        created_at_us=now_us,
        updated_at=now_us // 1_000_000,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def get_eval(session: Session, project: ProjectModel, eval_id: str) -> EvalModel:
    row = session.get(EvalModel, eval_id)
    if row is None or row.project_id != project.id:
        raise NotFound(f"no eval with id {eval_id!r}", param="eval_id")
    return row


def list_evals(
    session: Session, project: ProjectModel, *, after: str | None, limit: int, order: Order = "asc"
) -> tuple[list[EvalModel], bool]:
    """In creation order (`order`); `after` is the last eval id of the previous page."""
    anchor = get_eval(session, project, after) if after is not None else None
    query = in_creation_order(
        select(EvalModel).where(EvalModel.project_id == project.id),
        EvalModel,
        anchor,
        newest_first=order == "desc",
    )
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def update_eval(session: Session, project: ProjectModel, eval_id: str, request: EvalUpdate) -> EvalModel:
    """Name and metadata only (OpenAI's rule): runs already made keep meaning what they meant."""
    row = get_eval(session, project, eval_id)
    if request.name is not None:
        row.name = request.name
    if request.metadata is not None:
        row.eval_metadata = dict(request.metadata)
    row.updated_at = unix_now()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def delete_eval(session: Session, project: ProjectModel, eval_id: str) -> None:
    """With its runs and their items; refused while a run is queued or in progress (cancel it first).
    Report files stay in the project's files."""
    row = get_eval(session, project, eval_id)
    active = session.exec(
        select(func.count())
        .select_from(EvalRunModel)
        .where(EvalRunModel.eval_id == row.id, col(EvalRunModel.status).in_(EvalRunStatus.active()))
    ).one()
    if active:
        raise Conflict(
            f"eval {eval_id} has {active} run(s) queued or in progress; cancel them "
            "(POST /v1/evals/{eval_id}/runs/{run_id}/cancel) before deleting it",
            param="eval_id",
        )
    run_ids = select(EvalRunModel.id).where(EvalRunModel.eval_id == row.id)
    session.execute(delete(EvalOutputItemModel).where(col(EvalOutputItemModel.run_id).in_(run_ids)))
    session.execute(delete(EvalRunModel).where(col(EvalRunModel.eval_id) == row.id))
    session.delete(row)
    session.commit()


# ---- runs: requests ------------------------------------------------------------------------------------


def create_run(
    *,
    session: Session,
    settings: Settings,
    store: ObjectStore,
    project: ProjectModel,
    eval_id: str,
    request: RunCreate,
) -> EvalRunModel:
    """Validate the run against its eval, resolve its models, and store it queued. Nothing is stored
    unless every check passes; a project at its quota of active runs gets a 429."""
    evaluation = get_eval(session, project, eval_id)
    resolved = _check_run(session, store, project, evaluation, request)
    lock_project(session, project)
    try:
        check_run_quota(session, settings, project)
        now_us = unix_now_us()
        source = request.data_source
        row = EvalRunModel(
            id=new_id("evalrun_"),
            eval_id=evaluation.id,
            project_id=project.id,
            name=request.name or f"{evaluation.name or evaluation.id} run",
            status=EvalRunStatus.queued,
            model=(source.model or "") if isinstance(source, CompletionsDataSource) else "",
            data_source=source.model_dump(mode="json"),
            resolved=resolved.model_dump(mode="json"),
            run_metadata=request.metadata,
            created_at=now_us // 1_000_000,
            created_at_us=now_us,
            updated_at=now_us // 1_000_000,
        )
        session.add(row)
        session.commit()
    except Exception:
        session.rollback()  # let go of the project's lock now
        raise
    session.refresh(row)
    return row


def _check_run(
    session: Session, store: ObjectStore, project: ProjectModel, evaluation: EvalModel, request: RunCreate
) -> ResolvedRun:
    config = CustomDataSourceConfig.model_validate(evaluation.data_source_config)
    graders = eval_criteria(evaluation)
    source = request.data_source
    fields = checks.item_fields_read(graders)
    generates = isinstance(source, CompletionsDataSource) and source.input_messages is not None
    if isinstance(source, CompletionsDataSource):
        fields = checks.check_input_messages(source, config) | fields
    model = None
    if isinstance(source, CompletionsDataSource):
        if source.model is None:
            raise InvalidRequest(
                "a completions data source needs the model to evaluate", param="data_source.model"
            )
        model = resolve_model(session, project, source.model, param="data_source.model")
    preference = checks.preference_graders(graders)
    if preference and model is None:
        index, _ = preference[0]
        raise InvalidRequest(
            f"testing_criteria.{index} is a preference grader, which scores pairs with a model: use a "
            '"completions" data source with "model"',
            param="data_source.type",
        )
    references = {}
    for index, grader in preference:
        if grader.reference_model is None:
            assert model is not None
            base = model.model_copy(update={"name": model.base_model, "job_id": None})
            references[grader.name] = base
        else:
            references[grader.name] = resolve_model(
                session, project, grader.reference_model, param=f"testing_criteria.{index}.reference_model"
            )
    judges = {grader.name: grader.model for _, grader in checks.judge_graders(graders)}
    rows, count, file = _source_rows(session, store, project, source.source, preference=bool(preference))
    checks.check_rows_have(rows, fields)
    if not generates and checks.reads_sample(graders):
        checks.check_rows_have_samples(rows)
    if preference and isinstance(source.source, FileContentSource):
        checks.check_preference_items(rows, f"testing_criteria.{preference[0][0]}")
    return ResolvedRun(
        model=model, judges=judges, references=references, file_id=file.id if file else None, items=count
    )


def _source_rows(
    session: Session,
    store: ObjectStore,
    project: ProjectModel,
    source: FileIdSource | FileContentSource,
    *,
    preference: bool,
) -> tuple[list[checks.Row], int, FileModel | None]:
    """The rows to check (every inline row; a file's first line) and how many items the source has."""
    if isinstance(source, FileContentSource):
        rows = [
            checks.Row(
                item=row.item,
                sample=row.sample,
                param=f"data_source.source.content.{i}",
                where=f"content[{i}]",
            )
            for i, row in enumerate(source.content)
        ]
        return rows, len(rows), None
    param = "data_source.source.id"
    try:
        file = get_file(session, project, source.id)
    except NotFound:
        raise InvalidRequest(
            f"no file with id {source.id!r}: upload the items with POST /v1/files first",
            param=param,
            code="file_not_found",
        ) from None
    if file.purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"file {file.id} has purpose {file.purpose!r}; a data source is a file uploaded with purpose "
            f"'{EVALS_PURPOSE}' (items) or '{PURPOSE}' (preference pairs)",
            param=param,
            code="invalid_file_purpose",
        )
    if preference and not file.format:
        raise InvalidRequest(
            f"file {file.id} is not preference data, and a preference grader needs pairs "
            "(prompt/chosen/rejected rows)",
            param=param,
            code="invalid_preference_item",
        )
    key, file_id = file.storage_key, file.id
    session.commit()  # no transaction stays open while the store is read
    first = _first_line(store, key)
    try:
        parsed = json.loads(first)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"line 1 of {file_id} is not a JSON object", param=param, code="invalid_file")
    item, sample = datasource_row(parsed)
    row = checks.Row(item=item, sample=sample, param=param, where=f"line 1 of {file_id}")
    return [row], file.rows, file


def _first_line(store: ObjectStore, key: str) -> bytes:
    buffer = b""
    for chunk in store.iter_bytes(key, chunk_size=64 * 1024):
        buffer += chunk
        if b"\n" in buffer or len(buffer) > FIRST_LINE_LIMIT:
            break
    return buffer.split(b"\n", 1)[0]


def get_run(session: Session, project: ProjectModel, eval_id: str, run_id: str) -> EvalRunModel:
    row = session.get(EvalRunModel, run_id)
    if row is None or row.project_id != project.id or row.eval_id != eval_id:
        raise NotFound(f"no run with id {run_id!r} in eval {eval_id!r}", param="run_id")
    return row


def latest_attempts(session: Session, runs: Sequence[EvalRunModel]) -> dict[str, RunModel]:
    """Each run's latest attempt (its `runs` row), in one query, for the progress its object shows."""
    ids = [run.id for run in runs]
    if not ids:
        return {}
    rows = session.exec(
        select(RunModel).where(col(RunModel.eval_run_id).in_(ids)).order_by(col(RunModel.attempt))
    ).all()
    return {row.eval_run_id: row for row in rows if row.eval_run_id is not None}


def list_runs(
    session: Session,
    project: ProjectModel,
    eval_id: str,
    *,
    after: str | None,
    limit: int,
    order: Order = "asc",
    status: EvalRunStatus | None = None,
) -> tuple[list[EvalRunModel], bool]:
    evaluation = get_eval(session, project, eval_id)
    anchor = get_run(session, project, eval_id, after) if after is not None else None
    query = select(EvalRunModel).where(EvalRunModel.eval_id == evaluation.id)
    if status is not None:
        query = query.where(EvalRunModel.status == status.value)
    query = in_creation_order(query, EvalRunModel, anchor, newest_first=order == "desc")
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def cancel_run(session: Session, project: ProjectModel, eval_id: str, run_id: str) -> EvalRunModel:
    """The user's cancel: see `request_cancel`. Cancelling a finished run changes nothing."""
    return request_cancel(session, get_run(session, project, eval_id, run_id))


def request_cancel(session: Session, run: EvalRunModel) -> EvalRunModel:
    """A queued run is canceled at once (nothing was launched for it); an in-progress one gets
    `desired="cancel"`, which the executor acts on. Returns the run as it is now."""
    if _move(session, run, EvalRunStatus.queued, EvalRunStatus.canceled, desired="cancel", finished=True):
        return _reloaded(session, run.id)
    session.execute(
        update(EvalRunModel)
        .where(col(EvalRunModel.id) == run.id, col(EvalRunModel.status) == EvalRunStatus.in_progress.value)
        .values(desired="cancel", updated_at=unix_now())
    )
    session.commit()
    return _reloaded(session, run.id)


def delete_run(session: Session, project: ProjectModel, eval_id: str, run_id: str) -> None:
    """A finished run and its items; refused while queued or in progress (cancel it first)."""
    run = get_run(session, project, eval_id, run_id)
    if EvalRunStatus(run.status).is_active:
        raise Conflict(f"run {run_id} is {run.status}; cancel it before deleting it", param="run_id")
    session.execute(delete(EvalOutputItemModel).where(col(EvalOutputItemModel.run_id) == run.id))
    session.delete(run)
    session.commit()


# ---- runs: what the executor records ---------------------------------------------------------------------


def mark_in_progress(session: Session, run: EvalRunModel) -> bool:
    """Claim a queued run before launching it; False when it is no longer queued at the `lock_token`
    the caller loaded (canceled, or claimed by another controller): then launch nothing."""
    return _move(session, run, EvalRunStatus.queued, EvalRunStatus.in_progress, started=True)


def record_output_items(session: Session, run: EvalRunModel, items: Sequence[OutputItem]) -> None:
    """Store graded items of an in-progress run. Idempotent by `datasource_item_id`: an item reported
    again (a retried attempt) replaces the earlier one. Conflict (409) once the run has finished."""
    status, _ = _current(session, run.id)
    if status != EvalRunStatus.in_progress.value:
        raise Conflict(f"run {run.id} is {status}; it takes output items only while in_progress")
    names = {grader.name for grader in eval_criteria(session.get_one(EvalModel, run.eval_id))}
    size = ResolvedRun.model_validate(run.resolved).items
    for item in items:
        if item.datasource_item_id >= size:
            raise InvalidRequest(
                f"item {item.datasource_item_id}: the run's data source has {size} items (0 to {size - 1})",
                param="datasource_item_id",
            )
        unknown = [r.name for r in item.results if r.name not in names]
        if unknown:
            raise InvalidRequest(
                f"item {item.datasource_item_id}: results for {unknown}, which are not testing criteria "
                f"of eval {run.eval_id} ({sorted(names)})",
                param="results",
            )
    ids = [item.datasource_item_id for item in items]
    existing = {
        row.datasource_item_id: row
        for row in session.exec(
            select(EvalOutputItemModel).where(
                EvalOutputItemModel.run_id == run.id, col(EvalOutputItemModel.datasource_item_id).in_(ids)
            )
        )
    }
    for item in items:
        row = existing.get(item.datasource_item_id) or EvalOutputItemModel(
            id=new_id("outputitem_"),
            run_id=run.id,
            eval_id=run.eval_id,
            datasource_item_id=item.datasource_item_id,
            status="",
            datasource_item={},
            results=[],
            sample={},
        )
        row.status = results.item_status(item.sample, item.results).value
        row.datasource_item = item.datasource_item
        row.results = [r.model_dump(mode="json", exclude_none=True) for r in item.results]
        row.sample = item.sample.model_dump(mode="json")
        session.add(row)
    session.commit()


def stored_items(session: Session, run_id: str) -> list[OutputItem]:
    rows = session.exec(
        select(EvalOutputItemModel)
        .where(EvalOutputItemModel.run_id == run_id)
        .order_by(col(EvalOutputItemModel.datasource_item_id))
    )
    return [
        OutputItem(
            datasource_item_id=row.datasource_item_id,
            datasource_item=row.datasource_item,
            results=[GraderResult.model_validate(result) for result in row.results],
            sample=Sample.model_validate(row.sample),
        )
        for row in rows
    ]


def finish_run(
    *,
    session: Session,
    store: ObjectStore,
    run: EvalRunModel,
    status: EvalRunStatus,
    error: dict[str, str] | None = None,
) -> bool:
    """End an in-progress run: figures from its stored items, the report written to the store, then
    status, figures and the report's file row in one compare-and-set. False (nothing changed) when the
    run was not in progress at the caller's `lock_token`. `error`: {"code", "message"} for a failure."""
    if not status.is_terminal:
        raise ValueError(f"finish_run needs a final status, not {status}")
    if _current(session, run.id) != (EvalRunStatus.in_progress.value, run.lock_token):
        session.commit()
        return False  # already moved: leave the winner's report alone
    evaluation = session.get_one(EvalModel, run.eval_id)
    names = [grader.name for grader in eval_criteria(evaluation)]
    items = stored_items(session, run.id)
    counts, per_criterion, usage = results.summarize(names, items)
    session.commit()  # no transaction stays open while the store is written
    data = report.report_jsonl(
        run=run,
        status=status.value,
        error=error,
        items=items,
        counts=counts,
        criteria=per_criterion,
        usage=usage,
    )
    file_row = report.store_report(store, run, data)
    moved = _move(
        session,
        run,
        EvalRunStatus.in_progress,
        status,
        finished=True,
        commit=False,
        error=error,
        result_counts=counts.model_dump(),
        per_testing_criteria_results=[c.model_dump() for c in per_criterion],
        per_model_usage=[u.model_dump() for u in usage],
        report_file_id=file_row.id,
    )
    if moved and session.get(FileModel, file_row.id) is None:
        session.add(file_row)
    session.commit()
    return moved


def _move(
    session: Session,
    run: EvalRunModel,
    from_: EvalRunStatus,
    to: EvalRunStatus,
    *,
    started: bool = False,
    finished: bool = False,
    commit: bool = True,
    **fields: object,
) -> bool:
    """Compare-and-set `from_` -> `to` at the run's loaded `lock_token`; True when this call moved it.
    On success `run` is updated in memory too, with the new `lock_token`."""
    now = unix_now()
    values: dict[str, object] = {"status": to, "lock_token": new_lock_token(), "updated_at": now}
    if started:
        values["started_at"] = now
    if finished:
        values["finished_at"] = now
    values |= fields
    result = session.execute(
        guarded_update(EvalRunModel, run.id, run.lock_token, col(EvalRunModel.status) == from_.value).values(
            **values
        )
    )
    moved = getattr(result, "rowcount", 0) == 1
    if commit:
        session.commit()
    if moved:
        # As committed values: the row in memory must not turn into a later, unguarded UPDATE.
        for name, value in values.items():
            set_committed_value(run, name, value)
    return moved


def _current(session: Session, run_id: str) -> tuple[str, str]:
    """The run's status and lock token in the database now (a Core read: the caller's loaded row, which
    may be the session's own copy, keeps the values it was loaded with)."""
    row = session.execute(
        select(col(EvalRunModel.status), col(EvalRunModel.lock_token)).where(col(EvalRunModel.id) == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run with id {run_id!r}", param="run_id")
    return str(row[0]), str(row[1])


def _reloaded(session: Session, run_id: str) -> EvalRunModel:
    row = session.get(EvalRunModel, run_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no run with id {run_id!r}", param="run_id")
    return row


# ---- output items ----------------------------------------------------------------------------------------


def list_output_items(
    session: Session,
    project: ProjectModel,
    eval_id: str,
    run_id: str,
    *,
    after: str | None,
    limit: int,
    order: Order = "asc",
    status: OutputItemStatus | None = None,
) -> tuple[list[EvalOutputItemModel], bool]:
    """In data source order (`order`); `after` is the last output item id of the previous page."""
    run = get_run(session, project, eval_id, run_id)
    query = select(EvalOutputItemModel).where(EvalOutputItemModel.run_id == run.id)
    if status is not None:
        query = query.where(EvalOutputItemModel.status == status.value)
    position = col(EvalOutputItemModel.datasource_item_id)
    if after is not None:
        anchor = get_output_item(session, project, eval_id, run_id, after)
        beyond = (
            position > anchor.datasource_item_id if order == "asc" else position < anchor.datasource_item_id
        )
        query = query.where(beyond)
    query = query.order_by(position.asc() if order == "asc" else position.desc())
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def get_output_item(
    session: Session, project: ProjectModel, eval_id: str, run_id: str, output_item_id: str
) -> EvalOutputItemModel:
    run = get_run(session, project, eval_id, run_id)
    row = session.get(EvalOutputItemModel, output_item_id)
    if row is None or row.run_id != run.id:
        raise NotFound(f"no output item with id {output_item_id!r} in run {run_id!r}", param="output_item_id")
    return row
