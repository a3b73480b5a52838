"""openapi/openapi.yaml is the API contract: it must be exactly what the app generates."""

from pathlib import Path

import yaml

from alignd.openapi import REGENERATE, SPEC_FILE, render

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_spec_matches_the_app() -> None:
    checked_in = (ROOT / SPEC_FILE).read_text()
    assert checked_in == render(), f"{SPEC_FILE} differs from the app; regenerate it with `{REGENERATE}`"


def test_every_operation_documents_its_errors_in_the_openai_envelope() -> None:
    spec = yaml.safe_load((ROOT / SPEC_FILE).read_text())
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        responses = operation["responses"]
        assert "422" not in responses, f"{method} {path}: alignd answers invalid input with 400, not 422"
        assert "200" in responses, f"{method} {path}"
        secured = bool(operation.get("security"))
        if secured:
            assert "401" in responses, f"{method} {path} takes a credential but does not document 401"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)
                assert content["example"]["error"]["message"], (method, path, status)
