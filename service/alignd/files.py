"""Uploaded preference files: validated while streamed to the store, owned by one project.

A rejected upload leaves nothing behind: the stored object appears only when the stream ends
and every row is valid, and is deleted again if it puts the project over its storage quota. The
store writes on its own thread (`BackgroundWriter`) while the next chunk is validated.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from alignd.config import Settings
from alignd.datasets import DatasetSummary, DatasetValidator
from alignd.errors import InvalidRequest, NotFound, QuotaExceeded
from alignd.models import FileModel, ProjectModel, new_id, unix_now_us
from alignd.pagination import in_creation_order
from alignd.storage import ObjectStore
from alignd.storage.background import BackgroundWriter

PURPOSE = "fine-tune"
"""Uploaded preference data, what jobs train on."""
RESULTS_PURPOSE = "fine-tune-results"
"""A succeeded job's metrics as CSV (`alignd.jobs.results`), written by alignd, not uploaded."""


def check_purpose(purpose: str | None) -> None:
    """Before anything is stored: only preference data is uploaded."""
    if purpose is None:
        raise InvalidRequest("invalid purpose: Field required", param="purpose")
    if purpose != PURPOSE:
        raise InvalidRequest(f"purpose {purpose!r} is not supported; use 'fine-tune'", param="purpose")


@dataclass(frozen=True)
class StoredUpload:
    """A valid file in the store, not yet registered to a project (`register_upload`)."""

    file_id: str
    key: str
    summary: DatasetSummary


def store_upload(*, store: ObjectStore, settings: Settings, chunks: Iterable[bytes]) -> StoredUpload:
    """Validate the chunks while the store writes them; an invalid file is never written."""
    file_id = new_id("file-")
    key = f"files/{file_id}"
    validator = DatasetValidator(
        max_line_bytes=settings.max_line_bytes, max_total_bytes=settings.max_upload_bytes
    )
    writer = BackgroundWriter(store, key, content_type="application/jsonl")
    try:
        for chunk in chunks:
            validator.feed(chunk)
            writer.write(chunk)
        summary = validator.finish()
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return StoredUpload(file_id=file_id, key=key, summary=summary)


def register_upload(
    *,
    session: Session,
    store: ObjectStore,
    settings: Settings,
    project: ProjectModel,
    upload: StoredUpload,
    filename: str,
) -> FileModel:
    """Give a stored upload (purpose checked) to the project, or delete it if it is over the storage
    quota."""
    try:
        _check_storage_quota(session, settings, project, upload.summary.bytes)
    except Exception:
        store.delete(upload.key)
        raise
    summary = upload.summary
    now_us = unix_now_us()
    row = FileModel(
        id=upload.file_id,
        project_id=project.id,
        filename=_safe_name(filename),
        purpose=PURPOSE,
        bytes=summary.bytes,
        format=str(summary.format),
        rows=summary.rows,
        sha256=summary.sha256,
        storage_key=upload.key,
        report=summary.report.model_dump(mode="json"),
        created_at=now_us // 1_000_000,
        created_at_us=now_us,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def _safe_name(filename: str) -> str:
    """Only the base name, for display: never used to build a storage key."""
    return (filename.replace("\\", "/").rsplit("/", 1)[-1] or "upload.jsonl")[:255]


def stored_bytes(session: Session, project_id: str) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(FileModel.bytes), 0)).where(FileModel.project_id == project_id)
    ).one()
    return int(total)


def _check_storage_quota(session: Session, settings: Settings, project: ProjectModel, new_bytes: int) -> None:
    quota = project.quota_stored_bytes
    limit = settings.default_quota_stored_bytes if quota is None else quota
    used = stored_bytes(session, project.id)
    if used + new_bytes > limit:
        raise QuotaExceeded(
            f"storage quota exceeded: project {project.name} stores {used} bytes, this file adds "
            f"{new_bytes}, the limit is {limit}; delete files or ask an admin to raise it"
        )


def get_file(session: Session, project: ProjectModel, file_id: str) -> FileModel:
    row = session.get(FileModel, file_id)
    if row is None or row.project_id != project.id:
        raise NotFound(f"no file with id {file_id!r}", param="file_id")
    return row


def list_files(
    session: Session,
    project: ProjectModel,
    *,
    after: str | None,
    limit: int,
    purpose: str | None = None,
    newest_first: bool = True,
) -> tuple[list[FileModel], bool]:
    """`after` is the id of the last file of the previous page; `purpose` keeps only files of it."""
    anchor = get_file(session, project, after) if after is not None else None
    query = select(FileModel).where(FileModel.project_id == project.id)
    if purpose is not None:
        query = query.where(FileModel.purpose == purpose)
    query = in_creation_order(query, FileModel, anchor, newest_first=newest_first)
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, store: ObjectStore, project: ProjectModel, file_id: str) -> None:
    row = get_file(session, project, file_id)
    session.delete(row)
    session.commit()
    store.delete(row.storage_key)


def file_content(
    session: Session, store: ObjectStore, project: ProjectModel, file_id: str
) -> Iterator[bytes]:
    return store.iter_bytes(get_file(session, project, file_id).storage_key)
