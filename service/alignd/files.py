"""Uploaded preference files: validated while streamed to the store, owned by one project.

A rejected upload leaves nothing behind: the stored object appears only when the stream ends
and every row is valid, and is deleted again if it puts the project over its storage quota. The
store writes on its own thread (`BackgroundWriter`) while the next chunk is validated.

Uploads and deletes are sequences that are safe to interrupt at any point (a killed server):
- upload: stage (the store's temp file or multipart upload, invisible) -> store the object under
  `files/{id}` (invisible: no row) -> register the row (visible). A crash leaves a staged temp file
  or an object with no row; the sweeper removes both once older than its grace period.
- delete: mark the row deleting (invisible, bytes still counted) -> delete the object -> delete the
  row. A crash or a store error leaves the row marked; a retried DELETE or the sweeper finishes it.
"""

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from alignd import crash_points
from alignd.config import Settings
from alignd.datasets import DatasetSummary, DatasetValidator
from alignd.datasets.items import ItemsSummary, ItemsValidator
from alignd.errors import InvalidRequest, NotFound, QuotaExceeded
from alignd.models import FileModel, FileState, ProjectModel, new_id, unix_now_us
from alignd.pagination import in_creation_order
from alignd.storage import ObjectStore
from alignd.storage.background import BackgroundWriter

log = logging.getLogger("alignd.files")

PURPOSE = "fine-tune"
"""Uploaded preference data, what jobs train on."""
RESULTS_PURPOSE = "fine-tune-results"
"""A succeeded job's metrics as CSV (`alignd.jobs.results`), written by alignd, not uploaded."""
EVALS_PURPOSE = "evals"
"""Items for eval runs (`alignd.datasets.items`): one JSON object per line, whatever its fields."""
UPLOAD_PURPOSES = (PURPOSE, EVALS_PURPOSE)


def check_purpose(purpose: str | None) -> None:
    """Before anything is stored: preference data, or eval items."""
    if purpose is None:
        raise InvalidRequest("invalid purpose: Field required", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"purpose {purpose!r} is not supported; use 'fine-tune' (preference data) or 'evals' "
            "(eval items)",
            param="purpose",
        )


@dataclass(frozen=True)
class StoredUpload:
    """A valid file in the store, not yet registered to a project (`register_upload`)."""

    file_id: str
    key: str
    summary: DatasetSummary | ItemsSummary
    purpose: str = PURPOSE


def store_upload(
    *, store: ObjectStore, settings: Settings, chunks: Iterable[bytes], purpose: str = PURPOSE
) -> StoredUpload:
    """Validate the chunks (as `purpose` says) while the store writes them; an invalid file is never
    written."""
    file_id = new_id("file-")
    key = f"files/{file_id}"
    validator: DatasetValidator | ItemsValidator
    if purpose == EVALS_PURPOSE:
        validator = ItemsValidator(
            max_line_bytes=settings.max_line_bytes, max_total_bytes=settings.max_upload_bytes
        )
    else:
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
    return StoredUpload(file_id=file_id, key=key, summary=summary, purpose=purpose)


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
    quota or its row was not written."""
    crash_points.reached("upload.stored")
    try:
        return _insert_row(session, settings, project, upload, filename)
    except Exception:
        _discard_unregistered(session, store, upload)
        raise


def _discard_unregistered(session: Session, store: ObjectStore, upload: StoredUpload) -> None:
    """Best effort: a failed commit may still have written the row, so the object goes only once the
    database says there is none. What this cannot do (the database or store is down), the sweeper does."""
    try:
        session.rollback()
        if session.get(FileModel, upload.file_id) is None:
            store.delete(upload.key)
    except Exception:
        log.warning("left %s for the sweeper: could not check or delete it", upload.key, exc_info=True)


def _insert_row(
    session: Session, settings: Settings, project: ProjectModel, upload: StoredUpload, filename: str
) -> FileModel:
    _check_storage_quota(session, settings, project, upload.summary.bytes)
    summary = upload.summary
    now_us = unix_now_us()
    row = FileModel(
        id=upload.file_id,
        project_id=project.id,
        filename=_safe_name(filename),
        purpose=upload.purpose,
        bytes=summary.bytes,
        format=str(summary.format) if isinstance(summary, DatasetSummary) else None,
        rows=summary.rows,
        sha256=summary.sha256,
        storage_key=upload.key,
        report=summary.report.model_dump(mode="json") if isinstance(summary, DatasetSummary) else None,
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
    """What the project's files take in the store, files being deleted included until they are gone."""
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
    """A file of the project's that is not being deleted."""
    row = _own_row(session, project, file_id)
    if row.status == FileState.deleting.value:
        raise NotFound(f"no file with id {file_id!r}", param="file_id")
    return row


def _own_row(session: Session, project: ProjectModel, file_id: str) -> FileModel:
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
    query = select(FileModel).where(
        FileModel.project_id == project.id, FileModel.status != FileState.deleting.value
    )
    if purpose is not None:
        query = query.where(FileModel.purpose == purpose)
    query = in_creation_order(query, FileModel, anchor, newest_first=newest_first)
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, store: ObjectStore, project: ProjectModel, file_id: str) -> None:
    """Mark deleting -> delete the object -> delete the row. A file already marked (an earlier try
    failed or was cut short) is finished rather than refused, so a retried DELETE succeeds. A store
    error propagates with the file left marked: hidden, still counted, finished by a retry or the
    sweeper."""
    row = _own_row(session, project, file_id)
    key = row.storage_key
    session.execute(
        update(FileModel).where(col(FileModel.id) == file_id).values(status=FileState.deleting.value)
    )
    session.commit()
    crash_points.reached("delete.marked")
    finish_delete(session, store, file_id=file_id, key=key)


def finish_delete(session: Session, store: ObjectStore, *, file_id: str, key: str) -> None:
    """The last two steps of a delete, for a row already marked deleting; safe to repeat."""
    store.delete(key)
    crash_points.reached("delete.object_removed")
    session.execute(
        delete(FileModel).where(
            col(FileModel.id) == file_id, col(FileModel.status) == FileState.deleting.value
        )
    )
    session.commit()


def file_content(
    session: Session, store: ObjectStore, project: ProjectModel, file_id: str
) -> Iterator[bytes]:
    return store.iter_bytes(get_file(session, project, file_id).storage_key)
