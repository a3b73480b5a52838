"""S3 without static keys (storage/__init__.py `_s3_store`): the pod's workload identity, fetched by
minio's provider chain, here from a container-credentials endpoint such as EKS Pod Identity serves."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from alignd.config import Settings
from alignd.storage import S3Store, store_from_settings
from tests.storage.conftest import REGION


class CredentialsEndpoint(ThreadingHTTPServer):
    """Answers the container-credentials request with short-lived keys and counts who asked, with what."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.authorizations: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    server: CredentialsEndpoint

    def do_GET(self) -> None:
        self.server.authorizations.append(self.headers.get("Authorization"))
        expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps(
            {
                "AccessKeyId": "testing",
                "SecretAccessKey": "testing",
                "Token": "session",
                "Expiration": expires,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def credentials_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CredentialsEndpoint]:
    """The variables EKS Pod Identity injects; no AWS keys in the environment."""
    server = CredentialsEndpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("projected-service-account-token")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{server.server_port}/v1/creds"
    )
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token))
    yield server
    server.shutdown()
    server.server_close()


def test_without_keys_the_store_uses_the_pods_identity(
    s3_endpoint: str, credentials_endpoint: CredentialsEndpoint, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path, store="s3", s3_endpoint=s3_endpoint, s3_region=REGION, s3_secure=False
    )
    store = store_from_settings(settings)
    assert isinstance(store, S3Store)

    store.put_bytes("files/f", b"hello")
    assert b"".join(store.iter_bytes("files/f")) == b"hello"
    assert "X-Amz-Security-Token" in store.presigned_get_url("files/f", 60)
    assert credentials_endpoint.authorizations[:1] == ["projected-service-account-token"]


def test_one_key_without_the_other_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, store="s3", s3_endpoint="s3.example.com", s3_secret_key=SecretStr("sk")
    )
    with pytest.raises(ValueError, match=r"ALIGND_S3_ACCESS_KEY to be set .*the pod's IAM role"):
        store_from_settings(settings)
