"""Liveness, readiness and metrics.

`/healthz` and `/readyz` run on the event loop: neither takes a thread from the request pool, so a
database or store that hangs cannot make a live server fail its liveness probe (and be restarted in a
loop), and a pile of readiness probes cannot starve the requests behind them.
"""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from alignd.api.responses import errors
from alignd.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Independent of the database and the store on purpose: restarting
    the server does not bring either back."""
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
async def readyz(state: StateDep) -> dict[str, str]:
    """Readiness: the database and the object store answer, and the disks have room
    (`alignd.readiness`: one cached check on its own thread, with its own timeout)."""
    await state.readiness.check()
    return {"status": "ready"}
