"""The OpenAPI document the app serves at /openapi.json and `alignd openapi` writes to openapi/openapi.yaml.

FastAPI documents a 422 with its own `HTTPValidationError` body on every route with parameters; alignd
answers invalid input with 400 in OpenAI's envelope instead (api/errors.py), and each route lists its
real error statuses (api/responses.py). So the 422s and their schemas are removed here.

The request guards (`api/limits.py`, `api/ratelimit.py`) answer before any route runs, so their statuses
are added here to every operation they apply to: 400 for text that cannot be stored (in a parameter or
the body), 413 for a JSON body over the limit, 429 for an address with too many failed authentications.
"""

from typing import Any

from fastapi import FastAPI

from alignd.api.responses import errors

FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


class AligndAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = with_guard_answers(without_fastapi_422(super().openapi()))
        return self.openapi_schema


def without_fastapi_422(spec: dict[str, Any]) -> dict[str, Any]:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return spec


_JSON_TOO_LARGE = (
    "The JSON body is larger than the server accepts (ALIGND_MAX_JSON_BODY_BYTES).",
    "the request body is over this server's 1048576-byte limit for JSON requests "
    "(ALIGND_MAX_JSON_BODY_BYTES); send less in one request",
    "request_too_large",
)
_AUTH_FAILURES = (
    "Too many failed authentications from this client address; `Retry-After` says when to try again.",
    "too many failed authentication attempts from this address; try again in 49 s with a valid API key",
    "rate_limit_exceeded",
)

_RETRY_AFTER = {
    "description": "Seconds until this address may authenticate again (on a 429 for failed authentications).",
    "schema": {"type": "integer"},
}


def with_guard_answers(spec: dict[str, Any]) -> dict[str, Any]:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if operation.get("parameters") or "requestBody" in operation:
                responses.setdefault("400", _rendered(errors(400)[400]))
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                _add(responses, "413", _guard_answer(*_JSON_TOO_LARGE, type_="invalid_request_error"))
            if operation.get("security"):
                _add(responses, "429", _guard_answer(*_AUTH_FAILURES, type_="rate_limit_error"))
                responses["429"].setdefault("headers", {})["Retry-After"] = _RETRY_AFTER
    return spec


def _add(responses: dict[str, Any], status: str, answer: dict[str, Any]) -> None:
    """A route's own answer for the status stays (its example); the guard's reason joins its description."""
    if status in responses:
        responses[status]["description"] += " Or: " + answer["description"]
    else:
        responses[status] = answer


def _guard_answer(description: str, message: str, code: str, *, type_: str) -> dict[str, Any]:
    example = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return _rendered({"description": description, "content": {"application/json": {"example": example}}})


def _rendered(response: dict[str, Any]) -> dict[str, Any]:
    """A `responses=` entry as FastAPI writes it into the document: the envelope's schema by reference."""
    content = response["content"]["application/json"]
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        "description": response["description"],
        "content": {"application/json": content | {"schema": schema}},
    }
