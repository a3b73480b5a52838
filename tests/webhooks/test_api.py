"""api/webhooks.py: endpoints a project registers, lists and deletes; its secret shown once; clear 400s for
bad URLs and event names; another project's endpoints are not found. On SQLite and Postgres."""

import base64

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import ADMIN_KEY, bearer, new_project_key

ALL_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def _create(client: TestClient, key: str, **body: object) -> dict[str, object]:
    response = client.post("/v1/webhooks", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    created: dict[str, object] = response.json()
    return created


def test_create_shows_the_secret_once_and_lists_pages_newest_first(client: TestClient, key: str) -> None:
    first = _create(client, key, url="https://hooks.example.com/alignd")
    assert first["object"] == "webhook_endpoint"
    assert first["events"] == ALL_EVENTS
    secret = first["secret"]
    assert isinstance(secret, str) and secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32

    again = client.get(f"/v1/webhooks/{first['id']}", headers=bearer(key)).json()
    assert again == first | {"secret": None}

    second = _create(client, key, url="http://hooks2.example.com:9000/x", events=["fine_tuning.job.failed"])
    assert second["events"] == ["fine_tuning.job.failed"] and second["secret"] != secret
    page = client.get("/v1/webhooks?limit=1", headers=bearer(key)).json()
    assert [e["id"] for e in page["data"]] == [second["id"]] and page["has_more"] is True
    assert page["data"][0]["secret"] is None
    rest = client.get(f"/v1/webhooks?limit=1&after={page['last_id']}", headers=bearer(key)).json()
    assert [e["id"] for e in rest["data"]] == [first["id"]] and rest["has_more"] is False


def test_delete_removes_the_endpoint(client: TestClient, key: str) -> None:
    endpoint = _create(client, key, url="https://hooks.example.com/a")
    deleted = client.delete(f"/v1/webhooks/{endpoint['id']}", headers=bearer(key))
    assert deleted.json() == {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers=bearer(key)).status_code == 404
    assert client.delete(f"/v1/webhooks/{endpoint['id']}", headers=bearer(key)).status_code == 404
    assert client.get("/v1/webhooks", headers=bearer(key)).json()["data"] == []


def test_another_project_sees_nothing(client: TestClient, key: str) -> None:
    endpoint = _create(client, key, url="https://hooks.example.com/a")
    other = new_project_key(client, "team-b")
    for method, path in (
        ("GET", f"/v1/webhooks/{endpoint['id']}"),
        ("DELETE", f"/v1/webhooks/{endpoint['id']}"),
        ("GET", f"/v1/webhooks/{endpoint['id']}/deliveries"),
        ("GET", f"/v1/webhooks?after={endpoint['id']}"),
    ):
        response = client.request(method, path, headers=bearer(other))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/v1/webhooks", headers=bearer(other)).json()["data"] == []
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers=bearer(key)).status_code == 200


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://hooks.example.com/a", "must start with https:// or http://"),
        ("hooks.example.com/a", "must start with https:// or http://"),
        ("file:///etc/passwd", "must start with https:// or http://"),
        ("http://", "has no host"),
        ("https://hooks.example.com:99999/a", "is not a valid URL"),
        ("https://hooks.example.com/a b", "must not contain spaces"),
        ("https://\u00ae\u00c6\u0093/a", "is not a valid host name"),  # IDNA cannot encode it (was a 500)
        ("https://hooks.example.com/\x00", "contains a NUL character"),  # refused before routing
        ("", "invalid url"),
        ("https://h.example.com/" + "a" * 2100, "invalid url"),
    ],
)
def test_bad_urls_are_a_400_that_says_why(client: TestClient, key: str, url: str, message: str) -> None:
    response = client.post("/v1/webhooks", json={"url": url}, headers=bearer(key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "url" and message in error["message"], error


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "events is empty"),
        (["fine_tuning.job.created"], "invalid events.0"),
    ],
)
def test_bad_event_lists_are_a_400(client: TestClient, key: str, events: list[str], message: str) -> None:
    response = client.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/a", "events": events}, headers=bearer(key)
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


def test_keys_other_than_a_projects_are_refused(client: TestClient) -> None:
    body = {"url": "https://hooks.example.com/a"}
    assert client.post("/v1/webhooks", json=body).status_code == 401
    assert client.post("/v1/webhooks", json=body, headers=bearer("sk-alignd-nope")).status_code == 401
    assert client.post("/v1/webhooks", json=body, headers=bearer(ADMIN_KEY)).status_code == 403
