"""Base models jobs can train on: a local directory, an s3:// prefix, or a hub id.

A model under `s3://bucket/prefix` stays where it is. Trainers hold no storage credentials, so when a
run starts the trainer asks the control plane for its files (`model_files`: one presigned GET URL per
object under the prefix, `GET /internal/v1/jobs/{id}/model_files`) and downloads them into a local
cache before loading. That needs the S3 object store: with the local store nothing could sign those
URLs, so such a source is refused at registration.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from alignd.contract import ModelFile, ModelFilesResponse
from alignd.errors import Conflict, Forbidden, InvalidRequest, NotFound
from alignd.models import BaseModelModel, JobModel
from alignd.storage import InvalidKey, ObjectStore, S3Store, validate_key
from alignd.storage.s3 import ObjectInfo

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
S3_URL = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
S3_SCHEME = "s3://"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Without a trailing '/'; empty for a model at the bucket's root."""

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"

    @property
    def listing_prefix(self) -> str:
        """`models/llama/`, so that `models/llama-2/...` is not taken for part of `models/llama`."""
        return f"{self.prefix}/" if self.prefix else ""


def parse_s3_url(source: str) -> S3Location:
    match = S3_URL.match(source)
    if match is None:
        raise InvalidRequest(
            f"{source!r} is not an S3 location: write s3://<bucket>/<prefix>, with a lowercase bucket name",
            param="source",
        )
    prefix = (match.group("prefix") or "").strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKey:
            raise InvalidRequest(
                f"the prefix of {source!r} must be '/'-separated names of letters, digits, '.', '_' and '-'",
                param="source",
            ) from None
    return S3Location(match.group("bucket"), prefix)


@dataclass(frozen=True)
class AvailableModel:
    """A model a project can train from or use: a registered base model or one of its fine-tuned ones."""

    id: str
    created: int
    owned_by: str


def _base(model: BaseModelModel) -> AvailableModel:
    return AvailableModel(id=model.id, created=model.created_at, owned_by=model.owned_by)


def _tuned(job: JobModel) -> AvailableModel:
    return AvailableModel(
        id=str(job.fine_tuned_model), created=job.finished_at or job.created_at, owned_by=job.project_id
    )


def available_models(session: Session, project_id: str | None) -> list[AvailableModel]:
    """Registered base models, then the project's fine-tuned models."""
    bases = session.exec(select(BaseModelModel).order_by(col(BaseModelModel.id)))
    tuned = session.exec(
        select(JobModel).where(
            col(JobModel.project_id) == project_id, col(JobModel.fine_tuned_model).is_not(None)
        )
    )
    return [_base(m) for m in bases] + [_tuned(j) for j in tuned]


def available_model(session: Session, project_id: str | None, model_id: str) -> AvailableModel:
    """A base model, or one of the project's fine-tuned models; NotFound otherwise."""
    base = session.get(BaseModelModel, model_id)
    if base is not None:
        return _base(base)
    job = session.exec(
        select(JobModel).where(
            col(JobModel.project_id) == project_id, col(JobModel.fine_tuned_model) == model_id
        )
    ).first()
    if job is None:
        raise NotFound(
            f"no model {model_id!r}; GET /v1/models lists the models this key can use", param="model"
        )
    return _tuned(job)


def resolve_source(source: str, store: ObjectStore) -> str:
    """Where the trainer loads the model from; checked now so a bad source fails at registration."""
    if source.startswith(S3_SCHEME):
        location = parse_s3_url(source)
        _model_objects(store, location)
        return str(location)
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


def register_model(session: Session, store: ObjectStore, *, model_id: str, source: str) -> AvailableModel:
    location = resolve_source(source, store)  # before any query: no transaction is open while S3 answers
    if session.get(BaseModelModel, model_id) is not None:
        raise Conflict(f"model {model_id!r} is already registered", param="id")
    model = BaseModelModel(id=model_id, source=source, location=location)
    session.add(model)
    session.commit()
    session.refresh(model)
    return _base(model)


def model_files(store: ObjectStore, location: str, *, expires_seconds: int) -> ModelFilesResponse:
    """Presigned GET URLs for every file of a model kept under an s3:// location (what a trainer
    downloads before loading it). InvalidRequest for a model that is not in object storage."""
    if not location.startswith(S3_SCHEME):
        raise InvalidRequest(
            f"this job's base model {location} is not in object storage; load it from where it is",
            param="model",
        )
    s3_location = parse_s3_url(location)
    s3, objects = _model_objects(store, s3_location)
    start = len(s3_location.listing_prefix)
    files = [
        ModelFile(
            path=info.key[start:],
            url=s3.presigned_bucket_get_url(s3_location.bucket, info.key, expires_seconds),
            size=info.size,
            etag=info.etag,
        )
        for info in objects
    ]
    return ModelFilesResponse(location=location, files=files)


def _model_objects(store: ObjectStore, location: S3Location) -> tuple[S3Store, Sequence[ObjectInfo]]:
    """The store as S3 and the model's objects, after checking that a trainer will be able to load them."""
    if not isinstance(store, S3Store):
        raise InvalidRequest(
            f"{location} is in S3, but this server keeps its data in the local object store "
            "(ALIGND_STORE=local), which cannot hand trainers download URLs for it: configure the S3 "
            "store (ALIGND_STORE=s3 and ALIGND_S3_*) on a server that can read that bucket, or copy "
            "the model to a directory on this machine and register its absolute path",
            param="source",
        )
    try:
        objects = store.list_bucket(location.bucket, location.listing_prefix)
    except (NotFound, Forbidden) as exc:
        raise InvalidRequest(f"cannot read {location}: {exc.message}", param="source") from None
    names = {info.key[len(location.listing_prefix) :] for info in objects}
    if "config.json" not in names:
        found = f"{len(names)} objects but no config.json" if names else "no objects"
        raise InvalidRequest(
            f"{location} is not a saved transformers model: it has {found}; upload the directory "
            "save_pretrained wrote (config.json, weights, tokenizer files) under that prefix",
            param="source",
        )
    for info in objects:
        try:
            validate_key(info.key)
        except InvalidKey:
            raise InvalidRequest(
                f"{location} holds an object named {info.key!r}; alignd downloads only names of letters, "
                "digits, '.', '_', '-' and '/': rename or remove it",
                param="source",
            ) from None
    return store, objects
