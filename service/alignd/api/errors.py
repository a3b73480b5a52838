"""Every error leaves the API in OpenAI's envelope; no input produces a bare 500, and no failure of
the infrastructure (disk, database) that the server can name produces a 500 at all."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from alignd.errors import AligndError
from alignd.faults import database_error, disk_error
from alignd.schemas import ErrorBody, ErrorResponse

log = logging.getLogger("alignd.api")

SERVER_DISKS = "a disk this server writes to (ALIGND_DATA_DIR, or the system's temp dir)"
HTTP_TYPES = {401: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error"}


def envelope(
    status: int,
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _param(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AligndError)
    if exc.status_code >= 500:
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        log.warning("%s %s: %s%s", request.method, request.url.path, exc.message, cause)
    return _domain_response(exc)


def _domain_response(exc: AligndError) -> JSONResponse:
    headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return envelope(exc.status_code, exc.message, exc.type, exc.param, exc.code, headers=headers)


async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database that is down or full is a 503 or 507; any other database error is a bug (500)."""
    assert isinstance(exc, SQLAlchemyError)
    return await _infrastructure_response(request, exc, database_error(exc))


async def on_os_error(request: Request, exc: Exception) -> JSONResponse:
    """A full or read-only disk that no store translated (the data directory, a temporary file)."""
    assert isinstance(exc, OSError)
    return await _infrastructure_response(request, exc, disk_error(exc, where=SERVER_DISKS))


async def _infrastructure_response(
    request: Request, exc: Exception, error: AligndError | None
) -> JSONResponse:
    if error is None:
        return await on_unexpected(request, exc)
    log.warning(
        "%s %s: %s (%s: %s)", request.method, request.url.path, error.message, type(exc).__name__, exc
    )
    return _domain_response(error)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    param = _param(tuple(first.get("loc", ())))
    message = f"invalid {param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg"))
    return envelope(400, message, "invalid_request_error", param or None, "invalid_value")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return envelope(
        exc.status_code,
        str(exc.detail),
        HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
        code=code,
        headers=headers,
    )


def _allowed_methods(request: Request) -> str:
    """Every method of every route on this path (RFC 9110's `Allow`). Starlette names only the methods of
    the first route that matched the path, and GET and POST of one path are separate routes here."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return envelope(500, "internal error; the server log has the details", "server_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(AligndError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(SQLAlchemyError, on_database_error)
    app.add_exception_handler(OSError, on_os_error)
    app.add_exception_handler(Exception, on_unexpected)
