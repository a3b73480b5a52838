"""The OpenAPI document the app serves at /openapi.json and `alignd openapi` writes to openapi/openapi.yaml.

FastAPI documents a 422 with its own `HTTPValidationError` body on every route with parameters; alignd
answers invalid input with 400 in OpenAI's envelope instead (api/errors.py), and each route lists its
real error statuses (api/responses.py). So the 422s and their schemas are removed here.
"""

from typing import Any

from fastapi import FastAPI

FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


class AligndAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = without_fastapi_422(super().openapi())
        return self.openapi_schema


def without_fastapi_422(spec: dict[str, Any]) -> dict[str, Any]:
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return spec
