"""Presigned URLs of the local store, served by the API itself (S3 serves its own)."""

import tempfile
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from alignd.api.responses import binary, errors, ok
from alignd.deps import StoreDep
from alignd.errors import NotFound
from alignd.storage.local import LocalStore

router = APIRouter(prefix="/v1/storage", tags=["storage"], include_in_schema=True)
SignedQuery = Annotated[str, Query(min_length=1, max_length=128)]
SPOOL_BYTES = 8 << 20
CHUNK = 1 << 20


def _local(store: object) -> LocalStore:
    if not isinstance(store, LocalStore):
        raise NotFound("this server's store serves its own URLs")
    return store


@router.get(
    "/{key:path}",
    response_class=StreamingResponse,
    responses=binary("application/octet-stream", "The object's bytes.") | errors(400, 403, 404),
)
def download(key: str, expires: int, signature: SignedQuery, store: StoreDep) -> StreamingResponse:
    local = _local(store)
    local.signer.verify("GET", key, expires, signature)
    return StreamingResponse(
        local.iter_bytes(key),
        media_type="application/octet-stream",
        headers={"Content-Length": str(local.size(key))},
    )


@router.put(
    "/{key:path}",
    response_class=Response,
    responses=ok("Stored.") | errors(400, 403, 404),
)
async def upload(
    key: str, expires: int, signature: SignedQuery, request: Request, store: StoreDep
) -> Response:
    """The body is spooled (to disk past 8 MiB), then streamed into the store off the event loop."""
    local = _local(store)
    local.signer.verify("PUT", key, expires, signature)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        await run_in_threadpool(local.put_stream, key, iter(lambda: spool.read(CHUNK), b""))
    return Response(status_code=200)
