"""OpenAI's Evals API (the subset alignd runs): evals, their runs, and the runs' output items."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlmodel import Session

from alignd.api.responses import PROJECT, errors
from alignd.config import Settings
from alignd.deps import ProjectDep, SessionDep, SettingsDep, StoreDep
from alignd.errors import InvalidRequest
from alignd.evals import service
from alignd.evals.schemas import (
    EvalCreate,
    EvalDeleted,
    EvalObject,
    EvalUpdate,
    OutputItemObject,
    RunCreate,
    RunDeleted,
    RunObject,
)
from alignd.evals.status import EvalRunStatus, OutputItemStatus
from alignd.evals.wire import eval_object, output_item_object, run_object
from alignd.models import EvalRunModel
from alignd.schemas import ListResponse

router = APIRouter(prefix="/v1/evals", tags=["evals"])
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]


@router.post("", response_model=EvalObject, responses=errors(400, *PROJECT))
def create(body: EvalCreate, session: SessionDep, project: ProjectDep) -> EvalObject:
    return eval_object(service.create_eval(session=session, project=project, request=body))


@router.get("", response_model=ListResponse[EvalObject], responses=errors(400, *PROJECT))
def list_evals(
    session: SessionDep,
    project: ProjectDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    order_by: Literal["created_at", "updated_at"] = "created_at",
) -> ListResponse[EvalObject]:
    """In creation order (`order=desc`: newest first)."""
    if order_by != "created_at":
        raise InvalidRequest("evals list in creation order only: use order_by=created_at", param="order_by")
    rows, has_more = service.list_evals(session, project, after=after, limit=limit, order=order)
    return ListResponse[EvalObject].page([eval_object(r) for r in rows], has_more)


@router.get("/{eval_id}", response_model=EvalObject, responses=errors(*PROJECT))
def retrieve(eval_id: str, session: SessionDep, project: ProjectDep) -> EvalObject:
    return eval_object(service.get_eval(session, project, eval_id))


@router.post("/{eval_id}", response_model=EvalObject, responses=errors(400, *PROJECT))
def update(eval_id: str, body: EvalUpdate, session: SessionDep, project: ProjectDep) -> EvalObject:
    return eval_object(service.update_eval(session, project, eval_id, body))


@router.delete("/{eval_id}", response_model=EvalDeleted, responses=errors(*PROJECT, 409))
def delete(eval_id: str, session: SessionDep, project: ProjectDep) -> EvalDeleted:
    service.delete_eval(session, project, eval_id)
    return EvalDeleted(eval_id=eval_id)


@router.post("/{eval_id}/runs", response_model=RunObject, responses=errors(400, *PROJECT, 429))
def create_run(
    eval_id: str,
    body: RunCreate,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    project: ProjectDep,
) -> RunObject:
    """Validated and queued; the controller runs it."""
    run = service.create_run(
        session=session, settings=settings, store=store, project=project, eval_id=eval_id, request=body
    )
    return _run_object(session, settings, run)


@router.get("/{eval_id}/runs", response_model=ListResponse[RunObject], responses=errors(400, *PROJECT))
def list_runs(
    eval_id: str,
    session: SessionDep,
    settings: SettingsDep,
    project: ProjectDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: EvalRunStatus | None = None,
) -> ListResponse[RunObject]:
    rows, has_more = service.list_runs(
        session, project, eval_id, after=after, limit=limit, order=order, status=status
    )
    attempts = service.latest_attempts(session, rows)
    url = settings.resolved_public_url()
    data = [run_object(row, public_url=url, attempt=attempts.get(row.id)) for row in rows]
    return ListResponse[RunObject].page(data, has_more)


@router.get("/{eval_id}/runs/{run_id}", response_model=RunObject, responses=errors(*PROJECT))
def retrieve_run(
    eval_id: str, run_id: str, session: SessionDep, settings: SettingsDep, project: ProjectDep
) -> RunObject:
    run = service.get_run(session, project, eval_id, run_id)
    return _run_object(session, settings, run)


@router.post("/{eval_id}/runs/{run_id}/cancel", response_model=RunObject, responses=errors(*PROJECT))
def cancel_run(
    eval_id: str, run_id: str, session: SessionDep, settings: SettingsDep, project: ProjectDep
) -> RunObject:
    """A queued run is canceled at once; an in-progress one is stopped by the controller
    (`alignd.cancel_requested` until then)."""
    run = service.cancel_run(session, project, eval_id, run_id)
    return _run_object(session, settings, run)


@router.post("/{eval_id}/runs/{run_id}", response_model=RunObject, responses=errors(*PROJECT))
def cancel_run_openai_path(
    eval_id: str, run_id: str, session: SessionDep, settings: SettingsDep, project: ProjectDep
) -> RunObject:
    """The same cancel at the path OpenAI's API reference documents."""
    return cancel_run(eval_id, run_id, session, settings, project)


@router.delete("/{eval_id}/runs/{run_id}", response_model=RunDeleted, responses=errors(*PROJECT, 409))
def delete_run(eval_id: str, run_id: str, session: SessionDep, project: ProjectDep) -> RunDeleted:
    service.delete_run(session, project, eval_id, run_id)
    return RunDeleted(run_id=run_id)


@router.get(
    "/{eval_id}/runs/{run_id}/output_items",
    response_model=ListResponse[OutputItemObject],
    responses=errors(400, *PROJECT),
)
def list_output_items(
    eval_id: str,
    run_id: str,
    session: SessionDep,
    project: ProjectDep,
    after: str | None = None,
    limit: Limit = 20,
    order: Order = "asc",
    status: OutputItemStatus | None = None,
) -> ListResponse[OutputItemObject]:
    """In data source order; `status` keeps only `pass`, `fail` (or `error`) items."""
    rows, has_more = service.list_output_items(
        session, project, eval_id, run_id, after=after, limit=limit, order=order, status=status
    )
    return ListResponse[OutputItemObject].page([output_item_object(r) for r in rows], has_more)


@router.get(
    "/{eval_id}/runs/{run_id}/output_items/{output_item_id}",
    response_model=OutputItemObject,
    responses=errors(*PROJECT),
)
def retrieve_output_item(
    eval_id: str, run_id: str, output_item_id: str, session: SessionDep, project: ProjectDep
) -> OutputItemObject:
    return output_item_object(service.get_output_item(session, project, eval_id, run_id, output_item_id))


def _run_object(session: Session, settings: Settings, run: EvalRunModel) -> RunObject:
    attempt = service.latest_attempts(session, [run]).get(run.id)
    return run_object(run, public_url=settings.resolved_public_url(), attempt=attempt)
