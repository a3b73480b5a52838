"""Request dependencies as Annotated aliases, so routers stay thin and tests override one place.

The dependencies are `async def` unless they do I/O: FastAPI runs every plain `def` dependency in the
thread pool, and a hop there and back is dearer than the rest of a job-status read (under load the GIL
handoff to a worker thread can wait the interpreter's switch interval, 5 ms by default). With the
caller cache, authentication hops only on a miss; a plain `def` route then costs three hops (the
route, its response validation, closing its session) and the `async` job-status route one.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from alignd import auth
from alignd.chat.models import LoadedModels
from alignd.config import Settings
from alignd.errors import Forbidden, NotFound, Unauthenticated
from alignd.metrics import Metrics
from alignd.models import ApiKeyModel, JobModel, ProjectModel
from alignd.readiness import Readiness
from alignd.storage import ObjectStore


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    metrics: Metrics
    callers: auth.CallerCache
    readiness: Readiness
    chat_models: LoadedModels
    """The models `/v1/chat/completions` keeps loaded."""
    loop_reads: Engine | None = None
    """`db.loop_read_engine`: for the job-status fast path's reads on the event loop (SQLite files only)."""


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.alignd
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_store(state: StateDep) -> ObjectStore:
    return state.store


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """A session per request. Making one does no I/O; it connects at its first query, in the route's
    thread. Closing one that did connect returns the connection with a rollback, which is I/O, so that
    close goes to the thread pool too; closing an unused one (a route that never queried) stays here."""
    session = state.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_chat_models(state: StateDep) -> LoadedModels:
    return state.chat_models


SettingsDep = Annotated[Settings, Depends(get_settings)]
ChatModelsDep = Annotated[LoadedModels, Depends(get_chat_models)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
SessionDep = Annotated[Session, Depends(get_session)]


def bearer_credentials(authorization: str | None) -> str | None:
    """The credentials of an `Authorization` header value: scheme `bearer` in any case, the rest stripped;
    None for a missing or malformed header. The one parser of bearer credentials: the API-key and
    job-token dependencies below and the job-status fast path (`alignd.api.fast_path`) read them here,
    so the fast path cannot accept a header the route would refuse."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


class _Bearer(HTTPBearer):
    """HTTPBearer as the OpenAPI spec shows it, reading the header with `bearer_credentials`. None for a
    missing or malformed header, which the dependency answers with our 401 envelope, not FastAPI's."""

    async def __call__(self, request: HTTPConnection) -> HTTPAuthorizationCredentials | None:
        credentials = bearer_credentials(request.headers.get("Authorization"))
        return (
            None
            if credentials is None
            else HTTPAuthorizationCredentials(scheme="Bearer", credentials=credentials)
        )


# Both are `Authorization: Bearer ...`; two schemes so the OpenAPI spec says which credential each
# endpoint takes.
_api_key_scheme = _Bearer(
    scheme_name="ApiKey",
    description="A project API key, or the admin key for admin routes.",
)
_job_token_scheme = _Bearer(
    scheme_name="JobToken", description="The job token a trainer run was started with."
)


async def job_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_job_token_scheme)],
) -> str:
    if credentials is None:
        raise Unauthenticated("missing job token: send 'Authorization: Bearer <job token>'")
    return credentials.credentials


JobTokenDep = Annotated[str, Depends(job_token)]


def get_running_job(job_id: str, session: SessionDep, token: JobTokenDep) -> JobModel:
    """The job of the `{job_id}` path, if the token is its current run's (Unauthenticated otherwise)."""
    return auth.authenticate_job_token(session, job_id, token)


RunningJobDep = Annotated[JobModel, Depends(get_running_job)]
"""For the trainer-only routes: the caller's own job, while its run is live."""


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key_scheme)],
) -> auth.Caller:
    """The caller behind the request's API key: from the caller cache without leaving the event loop; a
    miss looks the key up in the thread pool. One dependency rather than a chain of small ones: FastAPI's
    cost per dependency is a visible share of a status read."""
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    state: AppState = request.app.state.alignd
    key = credentials.credentials
    caller = state.callers.get(key)
    if caller is None:
        caller = await run_in_threadpool(auth.identify, state.sessions, key, state.callers)
    return caller


CallerDep = Annotated[auth.Caller, Depends(get_caller)]


async def get_api_key(caller: CallerDep) -> ApiKeyModel:
    return caller.key()


ApiKeyDep = Annotated[ApiKeyModel, Depends(get_api_key)]


async def get_project(caller: CallerDep) -> ProjectModel:
    if caller.project_id is None:
        raise Forbidden("admin keys manage projects and keys; use a project API key for this endpoint")
    project = caller.project()
    if project is None:
        raise NotFound("the project of this API key no longer exists")
    return project


async def get_admin(key: ApiKeyDep) -> ApiKeyModel:
    if not key.is_admin:
        raise NotFound("not found")
    return key


ProjectDep = Annotated[ProjectModel, Depends(get_project)]
AdminDep = Annotated[ApiKeyModel, Depends(get_admin)]
