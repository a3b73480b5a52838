"""Admin routes (admin key only): projects, their API keys, revocation."""

from typing import Annotated

from fastapi import APIRouter, Query

from alignd import auth
from alignd.api.responses import ADMIN, errors
from alignd.deps import AdminDep, SessionDep, StateDep
from alignd.errors import NotFound
from alignd.models import ApiKeyModel, ProjectModel
from alignd.schemas import ApiKeyCreate, ApiKeyObject, ListResponse, ProjectCreate, ProjectObject

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def key_to_public(row: ApiKeyModel, plaintext: str | None = None) -> ApiKeyObject:
    return ApiKeyObject(
        id=row.id,
        name=row.name,
        project_id=row.project_id,
        created_at=row.created_at,
        redacted_value=f"{row.key_prefix}…",
        value=plaintext,
        revoked=row.revoked_at is not None,
    )


def project_to_public(row: ProjectModel) -> ProjectObject:
    return ProjectObject(id=row.id, name=row.name, created_at=row.created_at)


@router.post("/projects", response_model=ProjectObject, responses=errors(400, *ADMIN, 409))
def create_project(body: ProjectCreate, session: SessionDep, admin: AdminDep) -> ProjectObject:
    project = auth.create_project(
        session,
        body.name,
        quota_concurrent_jobs=body.quota_concurrent_jobs,
        quota_gpus=body.quota_gpus,
        quota_stored_bytes=body.quota_stored_bytes,
    )
    return project_to_public(project)


@router.get("/projects", response_model=ListResponse[ProjectObject], responses=errors(400, *ADMIN))
def list_projects(
    session: SessionDep,
    admin: AdminDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[ProjectObject]:
    rows, has_more = auth.list_projects(session, after=after, limit=limit)
    return ListResponse.page([project_to_public(row) for row in rows], has_more)


@router.get(
    "/projects/{project_id}/api_keys",
    response_model=ListResponse[ApiKeyObject],
    responses=errors(400, *ADMIN),
)
def list_keys(
    project_id: str,
    session: SessionDep,
    admin: AdminDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[ApiKeyObject]:
    rows, has_more = auth.list_api_keys(session, project_id, after=after, limit=limit)
    return ListResponse.page([key_to_public(row) for row in rows], has_more)


@router.post("/projects/{project_id}/api_keys", response_model=ApiKeyObject, responses=errors(400, *ADMIN))
def create_key(project_id: str, body: ApiKeyCreate, session: SessionDep, admin: AdminDep) -> ApiKeyObject:
    if session.get(ProjectModel, project_id) is None:
        raise NotFound(f"no project with id {project_id!r}", param="project_id")
    row, plaintext = auth.create_api_key(session, project_id, name=body.name)
    return key_to_public(row, plaintext)


@router.delete("/api_keys/{key_id}", response_model=ApiKeyObject, responses=errors(*ADMIN))
def revoke_key(key_id: str, session: SessionDep, state: StateDep, admin: AdminDep) -> ApiKeyObject:
    return key_to_public(auth.revoke_api_key(session, key_id, cache=state.callers))
