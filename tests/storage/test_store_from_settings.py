"""store_from_settings (storage/__init__.py): the configured backend, and a signing key that survives
restarts."""

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from alignd.config import Settings
from alignd.storage import LocalStore, S3Store, signing_secret, store_from_settings
from tests.storage.conftest import REGION


def local_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(data_dir=data_dir, store="local", **overrides)  # type: ignore[arg-type]


def test_local_store_defaults_to_data_dir(tmp_path: Path) -> None:
    store = store_from_settings(local_settings(tmp_path, public_url="http://api.example:8000/"))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "data"
    assert store.presigned_get_url("files/f", 60).startswith("http://api.example:8000/v1/storage/files/f?")
    store.ping()


def test_store_dir_overrides(tmp_path: Path) -> None:
    store = store_from_settings(local_settings(tmp_path, store_dir=tmp_path / "elsewhere"))
    assert isinstance(store, LocalStore) and store.root == tmp_path / "elsewhere"


def test_generated_signing_key_is_private_and_survives_restarts(tmp_path: Path) -> None:
    first = store_from_settings(local_settings(tmp_path))
    key_file = tmp_path / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes().strip()) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "signing.key"]  # no temp left over

    second = store_from_settings(local_settings(tmp_path))  # a restarted server
    assert isinstance(first, LocalStore) and isinstance(second, LocalStore)
    url = first.presigned_put_url("jobs/j1/adapter/weights", 600)
    expires = int(url.split("expires=")[1].split("&")[0])
    second.signer.verify("PUT", "jobs/j1/adapter/weights", expires, url.rsplit("signature=", 1)[1])


def test_configured_signing_key_wins(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, signing_key=SecretStr("from-the-environment"))
    assert signing_secret(settings) == b"from-the-environment"
    store_from_settings(settings)
    assert not (tmp_path / "signing.key").exists()


def test_each_data_dir_gets_its_own_key(tmp_path: Path) -> None:
    assert signing_secret(local_settings(tmp_path / "a")) != signing_secret(local_settings(tmp_path / "b"))


def test_s3_needs_its_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, store="s3", s3_access_key=SecretStr("ak"))
    with pytest.raises(ValueError, match="ALIGND_S3_ENDPOINT, ALIGND_S3_SECRET_KEY") as caught:
        store_from_settings(settings)
    assert "ALIGND_S3_ACCESS_KEY" not in str(caught.value)


def test_s3_store_from_settings(tmp_path: Path, s3_endpoint: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        store="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket="alignd-from-settings",
        s3_access_key=SecretStr("testing"),
        s3_secret_key=SecretStr("testing"),
        s3_region=REGION,
        s3_secure=False,
    )
    store = store_from_settings(settings)
    assert isinstance(store, S3Store) and store.bucket == "alignd-from-settings"
    store.ping()
    store.put_bytes("files/f", b"x")
    assert store.list() == ["files/f"]
