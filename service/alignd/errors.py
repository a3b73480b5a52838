"""Domain errors. Only the app's exception handlers turn them into HTTP responses, in OpenAI's
envelope: {"error": {"message", "type", "param", "code"}}."""

RETRY_AFTER_SECONDS = 5
"""What a 503 tells clients to wait (`Retry-After`): long enough for a database restart or a store's
brief outage, short enough that a client's retries notice the recovery soon."""


class AligndError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None
    retry_after: int | None = None
    """Seconds for the `Retry-After` header: set on errors that are worth retrying as they are."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(AligndError):
    status_code = 400
    type = "invalid_request_error"


class InvalidFile(InvalidRequest):
    """A data file row is unusable; the message names the line and the field."""

    code = "invalid_file"


class Unauthenticated(AligndError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(AligndError):
    status_code = 403
    type = "invalid_request_error"
    code = "forbidden"


class NotFound(AligndError):
    """Also what another project's resources look like: 404, never 403."""

    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(AligndError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(AligndError):
    status_code = 413
    type = "invalid_request_error"
    code = "file_too_large"


class QuotaExceeded(AligndError):
    status_code = 429
    type = "rate_limit_error"
    code = "quota_exceeded"


class NotInstalled(AligndError):
    """A feature needs an optional dependency this server was installed without; the message names the
    extra to install."""

    status_code = 501
    type = "server_error"
    code = "not_installed"


class Unavailable(AligndError):
    """A dependency (database, object store, a disk gone read-only) cannot serve us right now."""

    status_code = 503
    type = "server_error"
    code = "unavailable"
    retry_after = RETRY_AFTER_SECONDS


class InsufficientStorage(AligndError):
    """A disk alignd writes to (store, spool, database) is full: retrying helps only once an operator
    frees space, so no `Retry-After`."""

    status_code = 507
    type = "server_error"
    code = "insufficient_storage"
