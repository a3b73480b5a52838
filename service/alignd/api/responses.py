"""What each route can answer besides success, for the OpenAPI spec (`responses=` on routes).

Every error is OpenAI's envelope (`ErrorResponse`); each status carries a description and an example
taken from a real message of the code path that produces it. Routes list exactly the statuses they can
return, so `openapi/openapi.yaml` is a contract schemathesis can hold the server to.
"""

from typing import Any

from alignd.schemas import ErrorResponse

_ERRORS: dict[int, tuple[str, str, str, str | None, str | None]] = {
    # status: (description, example message, type, param, code)
    400: (
        "Bad request: a parameter, the JSON body or a data line is invalid; the message says what and where.",
        "invalid method.dpo.hyperparameters.beta: Input should be greater than 0",
        "invalid_request_error",
        "method.dpo.hyperparameters.beta",
        "invalid_value",
    ),
    401: (
        "Missing, unknown or revoked credential.",
        "Incorrect API key provided. Pass a valid key as `Authorization: Bearer <key>`.",
        "invalid_request_error",
        None,
        "invalid_api_key",
    ),
    403: (
        "The credential is valid but not for this endpoint (an admin key on a project endpoint, or a bad "
        "or expired URL signature).",
        "admin keys manage projects and keys; use a project API key for this endpoint",
        "invalid_request_error",
        None,
        "forbidden",
    ),
    404: (
        "No such resource in this project (other projects' resources look the same).",
        "no fine-tuning job with id 'ftjob-abc123'",
        "invalid_request_error",
        "fine_tuning_job_id",
        "not_found",
    ),
    409: (
        "The request conflicts with the resource's current state.",
        "job ftjob-abc123 is succeeded; it cannot be cancelled",
        "invalid_request_error",
        None,
        "conflict",
    ),
    413: (
        "The upload is larger than the server accepts.",
        "line 81234: the file is over the 10737418240-byte limit; split it into smaller files",
        "invalid_request_error",
        "file",
        "file_too_large",
    ),
    429: (
        "A project quota is used up (stored bytes, concurrent jobs or GPUs).",
        "storage quota exceeded: project search-team stores 1024 bytes, this file adds 2048, the limit is "
        "2048; delete files or ask an admin to raise it",
        "rate_limit_error",
        None,
        "quota_exceeded",
    ),
    501: (
        "The server was installed without an optional part this request needs; the message names the "
        "extra to install.",
        "estimates tokenize with the model's tokenizer, which needs the trainer extra on the API server: "
        "pip install 'alignd[trainer]'",
        "server_error",
        None,
        "not_installed",
    ),
    503: (
        "A dependency (database, object store, a disk) cannot serve the request right now; retry after "
        "`Retry-After` seconds.",
        "the database is not answering (it may be restarting); retry shortly. If this persists, an operator "
        "should check the database server that ALIGND_DATABASE_URL names",
        "server_error",
        None,
        "database_unavailable",
    ),
    507: (
        "A disk the server writes to (object store, upload spool, database) is full.",
        "no space left on the disk of the local store (ALIGND_STORE_DIR); an operator must free space or "
        "grow the volume, then retry",
        "server_error",
        None,
        "disk_full",
    ),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, message, type_, param, code = _ERRORS[status]
        example = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        out[status] = {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
    return out


AUTH = (401,)
"""Any route behind an API key."""
PROJECT = (401, 403, 404)
"""Any route behind a project API key: 403 for an admin key, 404 for a project that is gone."""
ADMIN = (401, 404)
"""Admin routes: 404 for a project key (admin routes do not reveal themselves)."""


def ok(description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 with no body worth a schema."""
    return {200: {"description": description}}


def binary(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body is bytes of `media_type` rather than JSON."""
    return {
        200: {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }
