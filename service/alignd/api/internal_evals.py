"""Evaluator-only endpoints: authenticated by the token of the eval run's current attempt, as a trainer's
by its job's; a token reaches only its own run (`{run_id}` must be the run the token was issued for)."""

from typing import Annotated

from fastapi import APIRouter, Depends

from alignd.api.responses import errors
from alignd.contract.evals import EvalReport, EvalRunSpec
from alignd.deps import JobTokenDep, SessionDep, SettingsDep, StoreDep
from alignd.evals import execution
from alignd.evals.run_spec import build_spec
from alignd.models import EvalRunModel, RunModel

router = APIRouter(prefix="/internal/v1/evals/runs", tags=["internal"])
URL_SECONDS = 24 * 3600


def get_running_eval(run_id: str, session: SessionDep, token: JobTokenDep) -> tuple[EvalRunModel, RunModel]:
    """The eval run of the `{run_id}` path and its live attempt, if the token is that attempt's."""
    return execution.authenticate_run_token(session, run_id, token)


RunningEvalDep = Annotated[tuple[EvalRunModel, RunModel], Depends(get_running_eval)]


@router.get("/{run_id}/spec", response_model=EvalRunSpec, responses=errors(400, 401, 404))
def spec(running: RunningEvalDep, session: SessionDep, store: StoreDep, settings: SettingsDep) -> EvalRunSpec:
    """What the evaluator runs: items (or a presigned file URL), model weights, graders, the judge."""
    return build_spec(session, store, settings, running[0], expires_seconds=URL_SECONDS)


@router.post("/{run_id}/report", responses=errors(400, 401, 409))
def report(body: EvalReport, running: RunningEvalDep, session: SessionDep) -> dict[str, bool]:
    """Graded items (stored once per item index), progress and events; an empty report is a heartbeat."""
    execution.apply_report(session, *running, body)
    return {"ok": True}
