from fastapi import APIRouter
from sqlmodel import col, select

from alignd.api.responses import ADMIN, AUTH, errors
from alignd.deps import AdminDep, ApiKeyDep, SessionDep, StoreDep
from alignd.errors import NotFound
from alignd.models import BaseModelModel, JobModel
from alignd.registry import register_model
from alignd.schemas import ListResponse, ModelObject, ModelRegister

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ListResponse[ModelObject], responses=errors(*AUTH))
def list_models(session: SessionDep, key: ApiKeyDep) -> ListResponse[ModelObject]:
    """Registered base models, then this project's fine-tuned models."""
    data = [
        ModelObject(id=m.id, created=m.created_at, owned_by=m.owned_by)
        for m in session.exec(select(BaseModelModel).order_by(col(BaseModelModel.id)))
    ]
    tuned = select(JobModel).where(
        JobModel.project_id == key.project_id, col(JobModel.fine_tuned_model).is_not(None)
    )
    data += [
        ModelObject(id=str(j.fine_tuned_model), created=j.finished_at or j.created_at, owned_by=j.project_id)
        for j in session.exec(tuned)
    ]
    return ListResponse[ModelObject].page(data, False)


@router.get("/{model_id:path}", response_model=ModelObject, responses=errors(*AUTH, 404))
def retrieve(model_id: str, session: SessionDep, key: ApiKeyDep) -> ModelObject:
    """A base model, or one of this project's fine-tuned models (ids may hold '/' and ':')."""
    base = session.get(BaseModelModel, model_id)
    if base is not None:
        return ModelObject(id=base.id, created=base.created_at, owned_by=base.owned_by)
    job = session.exec(
        select(JobModel).where(JobModel.project_id == key.project_id, JobModel.fine_tuned_model == model_id)
    ).first()
    if job is None:
        raise NotFound(
            f"no model {model_id!r}; GET /v1/models lists the models this key can use", param="model"
        )
    return ModelObject(id=model_id, created=job.finished_at or job.created_at, owned_by=job.project_id)


@router.post("", response_model=ModelObject, responses=errors(400, *ADMIN, 409))
def register(body: ModelRegister, session: SessionDep, store: StoreDep, admin: AdminDep) -> ModelObject:
    model = register_model(session, store, model_id=body.id, source=body.source)
    return ModelObject(id=model.id, created=model.created_at, owned_by=model.owned_by)
