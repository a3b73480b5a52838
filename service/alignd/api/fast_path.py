"""The job-status poll, answered without FastAPI's per-request machinery.

Clients poll `GET /v1/fine_tuning/jobs/{id}` in a loop, so it is most of a busy server's requests.
Through FastAPI each one pays for matching against every route, solving its dependencies, the
handler's bookkeeping and a trip to the thread pool for the read (bench/README.md has the figures). This
middleware answers the common case itself: a GET of exactly that path,
whose bearer key the caller cache already knows as a project's key, for a job of that project. It reads
the key with the route's parser (`alignd.deps.bearer_credentials`), the row with the route's domain
function (`jobs.service.read_job`), and serializes it with the route's serializer (`alignd.jobs.wire`)
and response model, so the answer is byte for byte the route's and nothing here is a second copy.
`ALIGND_STATUS_FAST_PATH=false` leaves every poll to the route (how bench/api_bench.py compares them).

Everything else falls through to the route, which stays the one place that makes errors: an unknown,
uncached or admin key, a missing job, a locked database, and any app with dependency overrides (tests
that replace `deps`). On SQLite files the read runs on the event loop through `AppState.loop_reads`;
elsewhere it takes the usual trip to the thread pool.
"""

import re
from functools import cache

from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from alignd.api import jobs
from alignd.deps import AppState, bearer_credentials
from alignd.errors import AligndError
from alignd.jobs import service
from alignd.jobs.wire import job_object
from alignd.schemas import JobObject

_JOB_PATH = re.compile(r"/v1/fine_tuning/jobs/([^/\x00]+)")
"""The route's path, with `{job_id}` matched as Starlette matches a path parameter, but never an id with a
NUL (which no database could look up): the route refuses that one."""
_JOB_OBJECT = TypeAdapter(JobObject)


class JobStatusFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _JOB_PATH.fullmatch(scope["path"])
            body = None if match is None else await _job_status(scope, match.group(1))
            if body is not None:
                scope["route"] = _route()  # what request metrics label the answer with
                length = str(len(body)).encode()
                headers = [(b"content-length", length), (b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def _job_status(scope: Scope, job_id: str) -> bytes | None:
    """The route's 200 body for this request, or None where the route should answer."""
    app = scope["app"]
    state: AppState | None = getattr(app.state, "alignd", None)
    if state is None or app.dependency_overrides:
        return None
    key = bearer_credentials(_authorization(scope))
    caller = None if key is None else state.callers.get(key)
    project = None if caller is None or caller.project_id is None else caller.project()
    if project is None:
        return None
    try:
        if state.loop_reads is not None:
            job = service.read_job(state.loop_reads, project, job_id)
        else:
            job = await run_in_threadpool(service.read_job, state.engine, project, job_id)
    except (AligndError, SQLAlchemyError):
        return None  # not found (the route says so), or the database busy (the route waits for it)
    return _JOB_OBJECT.dump_json(job_object(job), by_alias=True)


def _authorization(scope: Scope) -> str | None:
    """The first Authorization header, decoded as Starlette's `request.headers` decodes it for the route."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


@cache
def _route() -> APIRoute:
    return next(
        route
        for route in jobs.router.routes
        if isinstance(route, APIRoute) and route.endpoint is jobs.retrieve
    )
