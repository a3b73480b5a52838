from fastapi import APIRouter

from alignd import registry
from alignd.api.responses import ADMIN, AUTH, errors
from alignd.deps import AdminDep, ApiKeyDep, SessionDep, StoreDep
from alignd.schemas import ListResponse, ModelObject, ModelRegister

router = APIRouter(prefix="/v1/models", tags=["models"])


def _public(model: registry.AvailableModel) -> ModelObject:
    return ModelObject(id=model.id, created=model.created, owned_by=model.owned_by)


@router.get("", response_model=ListResponse[ModelObject], responses=errors(*AUTH))
def list_models(session: SessionDep, key: ApiKeyDep) -> ListResponse[ModelObject]:
    """Registered base models, then this project's fine-tuned models."""
    data = [_public(m) for m in registry.available_models(session, key.project_id)]
    return ListResponse[ModelObject].page(data, False)


@router.get("/{model_id:path}", response_model=ModelObject, responses=errors(*AUTH, 404))
def retrieve(model_id: str, session: SessionDep, key: ApiKeyDep) -> ModelObject:
    """A base model, or one of this project's fine-tuned models (ids may hold '/' and ':')."""
    return _public(registry.available_model(session, key.project_id, model_id))


@router.post("", response_model=ModelObject, responses=errors(400, *ADMIN, 409))
def register(body: ModelRegister, session: SessionDep, store: StoreDep, admin: AdminDep) -> ModelObject:
    return _public(registry.register_model(session, store, model_id=body.id, source=body.source))
