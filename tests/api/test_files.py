"""Uploading preference files: validated while streamed, 4xx naming line and field, nothing left
behind on rejection, and one project never sees another's files."""

import json

import pytest
from fastapi.testclient import TestClient

from alignd.app import create_app
from alignd.config import Settings
from tests.api.helpers import ADMIN_KEY, ROW, bearer, new_project_key


def _jsonl(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _upload(client: TestClient, key: str, body: bytes, purpose: str = "fine-tune", name: str = "prefs.jsonl"):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/files", files={"file": (name, body)}, data={"purpose": purpose}, headers=bearer(key)
    )


def _stored(client: TestClient) -> list[str]:
    store = client.app.state.alignd.store  # type: ignore[attr-defined]
    return store.list("files")  # type: ignore[no-any-return]


def test_upload_list_retrieve_content_report_delete(client: TestClient, key: str) -> None:
    body = _jsonl([ROW, ROW | {"chosen": " pear."}, ROW | {"rejected": " cat."}])
    created = _upload(client, key, body)
    assert created.status_code == 200, created.text
    file = created.json()
    assert file["object"] == "file" and file["bytes"] == len(body) and file["status"] == "processed"
    assert file["alignd"]["format"] == "standard" and file["alignd"]["rows"] == 3
    listed = client.get("/v1/files", headers=bearer(key)).json()
    assert [f["id"] for f in listed["data"]] == [file["id"]] and listed["has_more"] is False
    assert client.get(f"/v1/files/{file['id']}", headers=bearer(key)).json()["filename"] == "prefs.jsonl"
    assert client.get(f"/v1/files/{file['id']}/content", headers=bearer(key)).content == body
    report = client.get(f"/v1/files/{file['id']}/report", headers=bearer(key)).json()
    assert report["rows"] == 3
    deleted = client.delete(f"/v1/files/{file['id']}", headers=bearer(key)).json()
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file['id']}", headers=bearer(key)).status_code == 404
    assert _stored(client) == []


BAD_FILES = [
    (b'{"prompt": "p", "chosen": " a", "rejected": " b"}\n{oops\n', "line 2"),
    (b'{"prompt": "p", "rejected": " b"}\n', "line 1"),
    (b'{"prompt": "p", "chosen": "", "rejected": " b"}\n', "line 1"),
    (
        b'{"prompt": "p", "chosen": " a", "rejected": " b"}\n'
        b'{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}], '
        b'"rejected": [{"role": "assistant", "content": "b"}]}\n',
        "line 2",
    ),
    (b'{"prompt": "\xff", "chosen": " a", "rejected": " b"}\n', "line 1"),
    (b"", "no rows"),
]


@pytest.mark.parametrize(("body", "where"), BAD_FILES)
def test_bad_files_are_rejected_with_line_and_nothing_is_stored(
    client: TestClient, key: str, body: bytes, where: str
) -> None:
    response = _upload(client, key, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert where in error["message"] and error["type"] == "invalid_request_error"
    assert _stored(client) == []
    assert client.get("/v1/files", headers=bearer(key)).json()["data"] == []


def test_wrong_purpose_and_missing_auth(client: TestClient, key: str) -> None:
    response = _upload(client, key, _jsonl([ROW]), purpose="assistants")
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
    unauthenticated = client.get("/v1/files")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/files", headers=bearer("sk-alignd-wrong")).status_code == 401
    assert client.get("/v1/files", headers=bearer(ADMIN_KEY)).status_code == 403
    assert _stored(client) == []


def test_a_project_cannot_see_or_touch_another_projects_files(client: TestClient, key: str) -> None:
    file_id = _upload(client, key, _jsonl([ROW])).json()["id"]
    other = new_project_key(client, "team-b")
    for method, path in [("GET", ""), ("GET", "/content"), ("GET", "/report"), ("DELETE", "")]:
        response = client.request(method, f"/v1/files/{file_id}{path}", headers=bearer(other))
        assert response.status_code == 404, (method, path)
    assert client.get("/v1/files", headers=bearer(other)).json()["data"] == []
    assert client.get(f"/v1/files/{file_id}", headers=bearer(key)).status_code == 200


def test_pagination_with_after_and_limit(client: TestClient, key: str) -> None:
    ids = [_upload(client, key, _jsonl([ROW])).json()["id"] for _ in range(3)]
    first = client.get("/v1/files?limit=2", headers=bearer(key)).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = client.get(f"/v1/files?limit=2&after={first['last_id']}", headers=bearer(key)).json()
    assert rest["has_more"] is False
    assert sorted(f["id"] for f in first["data"] + rest["data"]) == sorted(ids)


def test_files_made_within_a_second_list_in_creation_order_either_way(
    client: TestClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids are random; give them the opposite order to creation, so only the creation order can win."""
    backwards = (f"file-{n:024x}" for n in range(10**6, 0, -1))
    monkeypatch.setattr("alignd.files.new_id", lambda prefix: next(backwards))
    made = [_upload(client, key, _jsonl([ROW])).json() for _ in range(5)]
    assert len({f["created_at"] for f in made}) <= 2, "made within a second or two"

    newest_first = [f["id"] for f in reversed(made)]
    assert [f["id"] for f in client.get("/v1/files", headers=bearer(key)).json()["data"]] == newest_first
    first = client.get("/v1/files?limit=3", headers=bearer(key)).json()
    rest = client.get(f"/v1/files?limit=3&after={first['last_id']}", headers=bearer(key)).json()
    assert [f["id"] for f in first["data"] + rest["data"]] == newest_first

    first = client.get("/v1/files?limit=3&order=asc", headers=bearer(key)).json()
    rest = client.get(f"/v1/files?limit=3&order=asc&after={first['last_id']}", headers=bearer(key)).json()
    assert [f["id"] for f in first["data"] + rest["data"]] == newest_first[::-1]
    assert first["has_more"] is True and rest["has_more"] is False
    wrong = client.get("/v1/files?order=newest", headers=bearer(key))
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "order"


def test_storage_quota_rejects_with_429(client: TestClient) -> None:
    project = client.post(
        "/v1/admin/projects", json={"name": "tiny", "quota_stored_bytes": 100}, headers=bearer(ADMIN_KEY)
    ).json()
    key = client.post(
        f"/v1/admin/projects/{project['id']}/api_keys", json={}, headers=bearer(ADMIN_KEY)
    ).json()
    response = _upload(client, key["value"], _jsonl([ROW, ROW]))
    assert response.status_code == 429 and "storage quota" in response.json()["error"]["message"]
    assert _stored(client) == []


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_prometheus_metrics_count_requests_uploads_and_jobs(client: TestClient, key: str) -> None:
    _upload(client, key, _jsonl([ROW]))
    client.get("/v1/files", headers=bearer(key))
    text = client.get("/metrics").text
    assert 'alignd_http_requests_total{method="GET",route="/v1/files",status="200"} 1.0' in text
    assert "alignd_upload_bytes_total" in text and "alignd_queue_depth 0.0" in text
    assert "alignd_http_request_seconds_bucket" in text


def _multipart(
    *parts: tuple[str, str | None, bytes], boundary: str = "b0undary"
) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand, so part order and truncation are the test's choice."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _post(client: TestClient, key: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return client.post("/v1/files", content=body, headers=bearer(key) | headers)  # type: ignore[arg-type]


def test_a_large_file_in_small_pieces_with_the_purpose_after_it(client: TestClient, key: str) -> None:
    """The body is parsed as it arrives: a file over several 1 MiB chunks, sent in odd-sized pieces,
    with the purpose field last, is stored byte for byte."""
    data = _jsonl([ROW | {"prompt": f"question {i} " + "x" * 200} for i in range(12_000)])
    body, headers = _multipart(("file", "big.jsonl", data), ("purpose", None, b"fine-tune"))
    pieces = (body[i : i + 65_521] for i in range(0, len(body), 65_521))
    created = _post(client, key, pieces, headers)
    assert created.status_code == 200, created.text
    assert created.json()["bytes"] == len(data) > 2 << 20 and created.json()["filename"] == "big.jsonl"
    assert client.get(f"/v1/files/{created.json()['id']}/content", headers=bearer(key)).content == data


def test_a_wrong_purpose_after_the_file_stores_nothing(client: TestClient, key: str) -> None:
    body, headers = _multipart(("file", "a.jsonl", _jsonl([ROW])), ("purpose", None, b"assistants"))
    response = _post(client, key, body, headers)
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"
    assert _stored(client) == []


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ([("purpose", None, b"fine-tune")], "file"),
        ([("file", "a.jsonl", b'{"prompt": "p", "chosen": " a", "rejected": " b"}\n')], "purpose"),
    ],
)
def test_a_missing_form_field_is_named(
    client: TestClient, key: str, parts: list[tuple[str, str | None, bytes]], param: str
) -> None:
    response = _post(client, key, *_multipart(*parts))
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert "Field required" in response.json()["error"]["message"]
    assert _stored(client) == []


def test_a_body_that_is_not_multipart_or_breaks_off_stores_nothing(client: TestClient, key: str) -> None:
    not_multipart = _post(client, key, _jsonl([ROW]), {"Content-Type": "application/jsonl"})
    assert (
        not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["error"]["message"]
    )
    body, headers = _multipart(("purpose", None, b"fine-tune"), ("file", "a.jsonl", _jsonl([ROW] * 50)))
    for cut in (body[: len(body) // 2], body[:-5]):  # mid-file; the file whole but no closing boundary
        truncated = _post(client, key, cut, headers)
        assert truncated.status_code == 400 and "cut off" in truncated.json()["error"]["message"]
    assert _stored(client) == []
    assert client.get("/v1/files", headers=bearer(key)).json()["data"] == []


def test_a_file_over_the_size_limit_is_refused_while_it_arrives(settings: Settings) -> None:
    settings.max_upload_bytes = 100_000
    with TestClient(create_app(settings)) as client:
        key = new_project_key(client, "limits")
        body, headers = _multipart(
            ("purpose", None, b"fine-tune"), ("file", "big.jsonl", _jsonl([ROW] * 5_000))
        )
        response = _post(client, key, (body[i : i + 8192] for i in range(0, len(body), 8192)), headers)
        assert response.status_code == 413 and response.json()["error"]["param"] == "file"
        assert response.json()["error"]["message"].startswith("the file is over the 100000-byte limit")
        assert _stored(client) == []
