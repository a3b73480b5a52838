"""Request dependencies as Annotated aliases, so routers stay thin and tests override one place."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
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


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    return authorization[7:].strip()


TokenDep = Annotated[str, Depends(bearer_token)]


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
