"""One chat completion: check the request's bounds, find and load the model, generate, and build the
response (the only producer of `chat.completion` objects)."""

import secrets
import time
from typing import Any

from sqlmodel import Session

from alignd import __version__
from alignd.chat.models import LoadedModels, generation
from alignd.chat.sources import ChatModelSource, find_source
from alignd.chat.weights import base_model, job_weights
from alignd.config import Settings
from alignd.errors import AligndError, InvalidRequest
from alignd.schemas import (
    ChatCompletionChoice,
    ChatCompletionCreate,
    ChatCompletionMessage,
    ChatCompletionObject,
    CompletionUsage,
)
from alignd.storage import ObjectStore

ROLES = {"developer": "system"}
"""OpenAI's newer name for system messages; chat templates know only `system`."""


def create_completion(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    models: LoadedModels,
    project_id: str,
    request: ChatCompletionCreate,
) -> ChatCompletionObject:
    """Blocking (loads and generates): call it from a worker thread, never on the event loop."""
    max_tokens = _max_tokens(request, settings.chat_max_tokens)
    source = find_source(session, project_id, request.model)
    session.close()  # nothing below needs the database; no transaction waits on downloads or generation
    module = generation()
    sampling = module.Sampling(
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        max_new_tokens=max_tokens,
        seed=secrets.randbits(63) if request.seed is None else request.seed,
    )
    conversation = [{"role": ROLES.get(m.role, m.role), "content": m.text()} for m in request.messages]
    with models.use(source.cache_key, lambda: _load(module, store, settings, source)) as generator:
        prompt_tokens = generator.prompt_tokens(conversation)
        if prompt_tokens + max_tokens > generator.context_length:
            raise InvalidRequest(
                f"the messages are {prompt_tokens} tokens; with {max_tokens} new tokens they exceed "
                f"{request.model}'s context of {generator.context_length} tokens: shorten the messages "
                "or lower max_completion_tokens",
                param="messages",
            )
        [completion] = generator.complete([conversation], sampling, batch_size=1)
    return ChatCompletionObject(
        id=f"chatcmpl-{secrets.token_hex(12)}",
        created=int(time.time()),
        model=request.model,
        choices=[
            ChatCompletionChoice(
                index=0,
                message=ChatCompletionMessage(content=completion.text),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
        ),
        system_fingerprint=f"alignd-{__version__}",
    )


def _max_tokens(request: ChatCompletionCreate, bound: int) -> int:
    name = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    asked = request.max_completion_tokens or request.max_tokens
    if asked is not None and asked > bound:
        raise InvalidRequest(
            f"{name} is {asked}; this server generates at most {bound} tokens per completion "
            "(ALIGND_CHAT_MAX_TOKENS)",
            param=name,
        )
    return asked or bound


def _load(module: Any, store: ObjectStore, settings: Settings, source: ChatModelSource) -> Any:
    cache = settings.resolved_chat_cache_dir()
    base = base_model(store, source.base_location, cache)
    try:
        if source.job_id is None:
            return module.ChatGenerator.load(base)
        weights = job_weights(store, source.job_id, cache)
        if source.full_weights:
            return module.ChatGenerator.load(weights)
        return module.ChatGenerator.load(base, adapter_dir=weights)
    except AligndError:
        raise
    except Exception as exc:  # whatever transformers or peft raise for files they cannot load
        raise InvalidRequest(
            f"the model {source.model_id!r} cannot be loaded for chat ({type(exc).__name__}: {exc}); "
            "an admin should check the files it was registered or trained with",
            param="model",
            code="model_not_loadable",
        ) from None
