"""Storage fixtures: every store test runs on the local store and on S3.

S3 is moto's ThreadedMotoServer on loopback (one per session), driven by the real minio client over
plain HTTP. Each test gets its own bucket, so tests don't see each other's objects. moto checks
neither signatures nor presigned-URL expiry; our own signing code is tested separately.
"""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from moto.server import ThreadedMotoServer

from alignd.storage import LocalStore, ObjectStore, S3Store, UrlSigner

PUBLIC_URL = "http://alignd.test"
SECRET = b"test-signing-secret"
REGION = "us-east-1"


def fast_http_client() -> urllib3.PoolManager:
    """Short timeouts and one retry, so a dead endpoint fails in well under a second."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=10.0),
        retries=urllib3.Retry(total=1, backoff_factor=0.05),
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """host:port of a moto S3 server; dummy AWS credentials so nothing reads a real profile."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            patch.setenv(name, "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"{host}:{port}"
        server.stop()


def s3_store(endpoint: str, *, bucket: str | None = None, create_bucket: bool = True) -> S3Store:
    """An S3Store on a fresh bucket (unless one is named) with the fast-failing HTTP client."""
    return S3Store(
        endpoint,
        bucket or f"alignd-test-{secrets.token_hex(6)}",
        "testing",
        "testing",
        region=REGION,
        secure=False,
        http_client=fast_http_client(),
        create_bucket=create_bucket,
    )


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET)


@pytest.fixture
def local_store(tmp_path: Path, signer: UrlSigner) -> LocalStore:
    return LocalStore(tmp_path / "store", signer=signer, public_url=PUBLIC_URL)


@pytest.fixture
def s3(s3_endpoint: str) -> S3Store:
    return s3_store(s3_endpoint)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """The same contract, checked on both backends."""
    fixture = "local_store" if request.param == "local" else "s3"
    result: ObjectStore = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def dead_endpoint(closed_port: int) -> str:
    """host:port where nothing listens (and nothing will while the test runs)."""
    return f"127.0.0.1:{closed_port}"
