from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from alignd import files
from alignd.api.responses import PROJECT, binary, errors
from alignd.api.storable import check_text
from alignd.api.upload_form import UploadForm
from alignd.datasets.report import QualityReport
from alignd.deps import ProjectDep, SessionDep, SettingsDep, StateDep, StoreDep
from alignd.errors import InvalidRequest, NotFound
from alignd.models import FileModel
from alignd.schemas import FileAligndInfo, FileDeleted, FileObject, ListResponse

router = APIRouter(prefix="/v1/files", tags=["files"])


WIRE_PURPOSES = {
    files.PURPOSE: files.PURPOSE,
    files.RESULTS_PURPOSE: files.RESULTS_PURPOSE,
    files.EVALS_PURPOSE: "user_data",
}
"""Stored purpose -> what the file object says: the SDK's file object knows no "evals" purpose, so eval
item files show as "user_data" (with `alignd.purpose` saying "evals")."""


def to_public(row: FileModel) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        filename=row.filename,
        purpose=WIRE_PURPOSES.get(row.purpose, files.PURPOSE),
        alignd=FileAligndInfo(
            format=row.format or "", rows=row.rows, sha256=row.sha256 or "", purpose=row.purpose
        ),
    )


UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "title": "UploadBody",
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {
                        "type": "string",
                        "contentMediaType": "application/octet-stream",
                        "title": "File",
                    },
                    "purpose": {"type": "string", "title": "Purpose"},
                },
            }
        }
    },
}
"""The form `UploadForm` parses, described for OpenAPI (the route reads the raw body itself)."""


@router.post(
    "",
    response_model=FileObject,
    responses=errors(400, *PROJECT, 413, 429, 503, 507),
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    project: ProjectDep,
    state: StateDep,
) -> FileObject:
    """Parsed as it arrives, then validated while it is stored: memory stays flat whatever the size."""
    form = UploadForm(request, max_file_bytes=settings.max_upload_bytes, spool_dir=settings.upload_spool_dir)
    try:
        await form.receive()
        if form.filename is None:
            raise InvalidRequest("invalid file: Field required", param="file")
        check_text(form.filename, param="file")
        files.check_purpose(form.purpose)
        stored = await run_in_threadpool(
            files.store_upload,
            store=store,
            settings=settings,
            chunks=form.chunks(),
            purpose=form.purpose or files.PURPOSE,
        )
    finally:
        form.close()
    row = await run_in_threadpool(
        files.register_upload,
        session=session,
        store=store,
        settings=settings,
        project=project,
        upload=stored,
        filename=form.filename,
    )
    state.metrics.upload_bytes.inc(row.bytes)
    return to_public(row)


@router.get("", response_model=ListResponse[FileObject], responses=errors(400, *PROJECT))
def list_files(
    session: SessionDep,
    project: ProjectDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> ListResponse[FileObject]:
    """Newest first unless `order=asc`; `purpose` keeps only `fine-tune` or `fine-tune-results` files."""
    rows, has_more = files.list_files(
        session, project, after=after, limit=limit, purpose=purpose, newest_first=order == "desc"
    )
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
    row = files.get_file(session, project, file_id)
    if row.report is None:
        raise NotFound(
            f"file {file_id} has no quality report: only preference data (purpose 'fine-tune') has one",
            param="file_id",
        )
    return row.report
