"""Base models jobs can train on: a local directory, an s3:// prefix, or a hub id."""

import re
from pathlib import Path

from sqlmodel import Session

from alignd.errors import Conflict, InvalidRequest
from alignd.models import BaseModelModel

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_source(source: str) -> str:
    """Where the trainer loads the model from; checked now so a bad source fails at registration."""
    if source.startswith("s3://"):
        return source
    if source.startswith("/"):
        if not (Path(source) / "config.json").exists():
            raise InvalidRequest(f"{source} is not a model directory (no config.json)", param="source")
        return source
    if HUB_ID.match(source):
        return source
    raise InvalidRequest(
        "source must be an absolute directory path, an s3:// prefix, or a hub id like org/name",
        param="source",
    )


def register_model(session: Session, *, model_id: str, source: str) -> BaseModelModel:
    if session.get(BaseModelModel, model_id) is not None:
        raise Conflict(f"model {model_id!r} is already registered", param="id")
    model = BaseModelModel(id=model_id, source=source, location=resolve_source(source))
    session.add(model)
    session.commit()
    session.refresh(model)
    return model
