from fastapi import APIRouter

from alignd import auth
from alignd.api.responses import ADMIN, errors
from alignd.deps import AdminDep, SessionDep, StateDep
from alignd.errors import NotFound
from alignd.models import ApiKeyModel, ProjectModel
from alignd.schemas import ApiKeyCreate, ApiKeyObject, ProjectCreate, ProjectObject

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


@router.post("/projects", response_model=ProjectObject, responses=errors(400, *ADMIN, 409))
def create_project(body: ProjectCreate, session: SessionDep, admin: AdminDep) -> ProjectObject:
    project = auth.create_project(
        session,
        body.name,
        quota_concurrent_jobs=body.quota_concurrent_jobs,
        quota_gpus=body.quota_gpus,
        quota_stored_bytes=body.quota_stored_bytes,
    )
    return ProjectObject(id=project.id, name=project.name, created_at=project.created_at)


@router.post("/projects/{project_id}/api_keys", response_model=ApiKeyObject, responses=errors(400, *ADMIN))
def create_key(project_id: str, body: ApiKeyCreate, session: SessionDep, admin: AdminDep) -> ApiKeyObject:
    if session.get(ProjectModel, project_id) is None:
        raise NotFound(f"no project with id {project_id!r}", param="project_id")
    row, plaintext = auth.create_api_key(session, project_id, name=body.name)
    return key_to_public(row, plaintext)


@router.delete("/api_keys/{key_id}", response_model=ApiKeyObject, responses=errors(*ADMIN))
def revoke_key(key_id: str, session: SessionDep, state: StateDep, admin: AdminDep) -> ApiKeyObject:
    return key_to_public(auth.revoke_api_key(session, key_id, cache=state.callers))
