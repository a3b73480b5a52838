from fastapi import APIRouter

from alignd.api.responses import PROJECT, errors
from alignd.chat.completions import create_completion
from alignd.deps import ChatModelsDep, ProjectDep, SessionDep, SettingsDep, StoreDep
from alignd.schemas import ChatCompletionCreate, ChatCompletionObject

router = APIRouter(prefix="/v1/chat", tags=["chat"])


@router.post("/completions", response_model=ChatCompletionObject, responses=errors(400, *PROJECT, 501, 503))
def create(
    body: ChatCompletionCreate,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    models: ChatModelsDep,
    project: ProjectDep,
) -> ChatCompletionObject:
    """A reply from a registered base model or one of this project's `ft:` models (OpenAI's chat
    completions, non-streaming, one choice). A plain `def`: FastAPI runs it in the thread pool, so
    loading and generating never block the event loop."""
    return create_completion(
        session=session, store=store, settings=settings, models=models, project_id=project.id, request=body
    )
