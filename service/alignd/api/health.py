from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from alignd.api.responses import errors
from alignd.deps import StateDep
from alignd.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics(state: StateDep) -> Response:
    """Prometheus exposition: requests, latency, uploads, controller passes, jobs, trainer values."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz", responses=errors(503))
def readyz(state: StateDep) -> dict[str, str]:
    """Readiness: the database and the object store both answer."""
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise Unavailable(f"database unreachable: {type(exc).__name__}") from None
    state.store.ping()
    return {"status": "ready"}
