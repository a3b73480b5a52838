"""Request dependencies as Annotated aliases, so routers stay thin and tests override one place."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from alignd import auth
from alignd.config import Settings
from alignd.errors import Forbidden, NotFound, Unauthenticated
from alignd.metrics import Metrics
from alignd.models import ApiKeyModel, ProjectModel
from alignd.storage import ObjectStore


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    metrics: Metrics


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.alignd
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_store(state: StateDep) -> ObjectStore:
    return state.store


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
SessionDep = Annotated[Session, Depends(get_session)]


# Both are `Authorization: Bearer ...`; two schemes so the OpenAPI spec says which credential each
# endpoint takes. auto_error=False: a missing or malformed header gets our 401 envelope, not FastAPI's.
_api_key_scheme = HTTPBearer(
    scheme_name="ApiKey",
    auto_error=False,
    description="A project API key, or the admin key for admin routes.",
)
_job_token_scheme = HTTPBearer(
    scheme_name="JobToken", auto_error=False, description="The job token a trainer run was started with."
)


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_api_key_scheme)],
) -> str:
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    return credentials.credentials


def job_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_job_token_scheme)],
) -> str:
    if credentials is None:
        raise Unauthenticated("missing job token: send 'Authorization: Bearer <job token>'")
    return credentials.credentials


TokenDep = Annotated[str, Depends(bearer_token)]
JobTokenDep = Annotated[str, Depends(job_token)]


def get_api_key(session: SessionDep, token: TokenDep) -> ApiKeyModel:
    return auth.authenticate(session, token)


ApiKeyDep = Annotated[ApiKeyModel, Depends(get_api_key)]


def get_project(session: SessionDep, key: ApiKeyDep) -> ProjectModel:
    if key.project_id is None:
        raise Forbidden("admin keys manage projects and keys; use a project API key for this endpoint")
    project = session.get(ProjectModel, key.project_id)
    if project is None:
        raise NotFound("the project of this API key no longer exists")
    return project


def get_admin(key: ApiKeyDep) -> ApiKeyModel:
    if not key.is_admin:
        raise NotFound("not found")
    return key


ProjectDep = Annotated[ProjectModel, Depends(get_project)]
AdminDep = Annotated[ApiKeyModel, Depends(get_admin)]
