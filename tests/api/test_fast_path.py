"""The job-status fast path answers exactly as the route does, and leaves everything else to it."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from alignd.api import fast_path
from alignd.app import create_app
from alignd.config import Settings
from alignd.deps import get_settings
from alignd.jobs import service
from tests.api.helpers import ADMIN_KEY, bearer, new_project_key, register_model, upload_rows


@pytest.fixture
def job_id(client: TestClient, key: str, tmp_path: Path) -> str:
    body = {"model": register_model(client, tmp_path), "training_file": upload_rows(client, key)}
    response = client.post("/v1/fine_tuning/jobs", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies the fast path answered with (the rest went to the route)."""
    bodies: list[bytes] = []
    original = fast_path._job_status

    async def recording(*args: object) -> bytes | None:
        body = await original(*args)  # type: ignore[arg-type]
        if body is not None:
            bodies.append(body)
        return body

    monkeypatch.setattr(fast_path, "_job_status", recording)
    return bodies


def test_the_answer_is_the_routes_byte_for_byte(
    client: TestClient, key: str, job_id: str, answered: list[bytes]
) -> None:
    path = f"/v1/fine_tuning/jobs/{job_id}"
    client.get("/v1/files", headers=bearer(key))  # the key is now in the caller cache
    fast = client.get(path, headers=bearer(key))
    assert answered == [fast.content]
    settings = client.app.state.alignd.settings  # type: ignore[attr-defined]
    client.app.dependency_overrides[get_settings] = lambda: settings  # type: ignore[attr-defined]
    routed = client.get(path, headers=bearer(key))
    assert answered == [fast.content], "with dependency overrides, the route answers"

    assert (fast.status_code, fast.content) == (routed.status_code, routed.content) == (200, routed.content)
    assert fast.headers == routed.headers
    counted = 'alignd_http_requests_total{method="GET",route="/v1/fine_tuning/jobs/{job_id}",status="200"}'
    assert f"{counted} 2.0" in client.get("/metrics").text


def test_errors_and_unknown_callers_go_to_the_route(
    client: TestClient, key: str, job_id: str, answered: list[bytes]
) -> None:
    other = new_project_key(client, "team-b")
    for token in (key, other):
        client.get("/v1/files", headers=bearer(token))
    path = f"/v1/fine_tuning/jobs/{job_id}"

    assert client.get(path, headers=bearer(other)).status_code == 404  # another project's job
    missing = client.get("/v1/fine_tuning/jobs/ftjob-missing", headers=bearer(key))
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "fine_tuning_job_id"
    assert client.get(path, headers=bearer(ADMIN_KEY)).status_code == 403
    assert client.get(path, headers=bearer("sk-alignd-unknown")).status_code == 401
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": f"Basic {key}"}).status_code == 401
    assert answered == []
    assert client.get(path, headers={"Authorization": f"bearer  {key} "}).status_code == 200
    assert len(answered) == 1, "the scheme in any case and the key stripped, as the route reads them"


def test_switched_off_the_route_answers_every_poll_with_the_same_bytes(
    settings: Settings, client: TestClient, key: str, job_id: str, answered: list[bytes]
) -> None:
    path = f"/v1/fine_tuning/jobs/{job_id}"
    client.get("/v1/files", headers=bearer(key))
    fast = client.get(path, headers=bearer(key))
    with TestClient(create_app(settings.model_copy(update={"status_fast_path": False}))) as routed_client:
        routed_client.get("/v1/files", headers=bearer(key))
        routed = routed_client.get(path, headers=bearer(key))

    assert answered == [fast.content], "only the app with the fast path on answered in middleware"
    assert (routed.status_code, routed.content) == (200, fast.content)


def test_a_failed_read_on_the_event_loop_is_left_to_the_route(
    client: TestClient, key: str, job_id: str, answered: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = client.app.state.alignd  # type: ignore[attr-defined]
    read_job = service.read_job

    def locked_on_the_loop(engine, *args):  # type: ignore[no-untyped-def]
        if engine is state.loop_reads:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return read_job(engine, *args)

    monkeypatch.setattr(service, "read_job", locked_on_the_loop)
    client.get("/v1/files", headers=bearer(key))

    response = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=bearer(key))

    assert response.status_code == 200 and response.json()["id"] == job_id
    assert answered == ([] if state.loop_reads is not None else [response.content])
