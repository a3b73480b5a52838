from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from alignd import files
from alignd.api.responses import PROJECT, binary, errors
from alignd.datasets.report import QualityReport
from alignd.deps import ProjectDep, SessionDep, SettingsDep, StateDep, StoreDep
from alignd.models import FileModel
from alignd.schemas import FileAligndInfo, FileDeleted, FileObject, ListResponse

router = APIRouter(prefix="/v1/files", tags=["files"])
CHUNK = 1 << 20


def to_public(row: FileModel) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        filename=row.filename,
        purpose=files.RESULTS_PURPOSE if row.purpose == files.RESULTS_PURPOSE else files.PURPOSE,
        alignd=FileAligndInfo(format=row.format or "", rows=row.rows, sha256=row.sha256 or ""),
    )


@router.post("", response_model=FileObject, responses=errors(400, *PROJECT, 413, 429))
async def upload(
    file: UploadFile,
    purpose: Annotated[str, Form()],
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    project: ProjectDep,
    state: StateDep,
) -> FileObject:
    """Validated while it streams to the store (the body is spooled to disk, never held in memory)."""

    def chunks() -> Iterator[bytes]:
        while block := file.file.read(CHUNK):
            yield block

    row = await run_in_threadpool(
        files.create_file,
        session=session,
        store=store,
        settings=settings,
        project=project,
        filename=file.filename or "upload.jsonl",
        purpose=purpose,
        chunks=chunks(),
    )
    state.metrics.upload_bytes.inc(row.bytes)
    return to_public(row)


@router.get("", response_model=ListResponse[FileObject], responses=errors(400, *PROJECT))
def list_files(
    session: SessionDep,
    project: ProjectDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> ListResponse[FileObject]:
    rows, has_more = files.list_files(session, project, after=after, limit=limit)
    data = [to_public(r) for r in rows]
    return ListResponse[FileObject].page(data, has_more)


@router.get("/{file_id}", response_model=FileObject, responses=errors(*PROJECT))
def retrieve(file_id: str, session: SessionDep, project: ProjectDep) -> FileObject:
    return to_public(files.get_file(session, project, file_id))


@router.delete("/{file_id}", response_model=FileDeleted, responses=errors(*PROJECT))
def delete(file_id: str, session: SessionDep, store: StoreDep, project: ProjectDep) -> FileDeleted:
    files.delete_file(session, store, project, file_id)
    return FileDeleted(id=file_id)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses=binary("application/octet-stream", "The file's bytes, as uploaded.") | errors(*PROJECT),
)
def content(file_id: str, session: SessionDep, store: StoreDep, project: ProjectDep) -> StreamingResponse:
    return StreamingResponse(
        files.file_content(session, store, project, file_id), media_type="application/octet-stream"
    )


@router.get("/{file_id}/report", response_model=QualityReport, responses=errors(*PROJECT))
def report(file_id: str, session: SessionDep, project: ProjectDep) -> dict[str, object]:
    return files.get_file(session, project, file_id).report or {}
