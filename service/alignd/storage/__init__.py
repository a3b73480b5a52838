"""Object storage: the ObjectStore interface, its local and S3 backends, and the one function that
builds the configured store from Settings."""

import secrets

from minio.credentials import ChainedProvider, EnvAWSProvider, IamAwsProvider

from alignd.config import Settings
from alignd.secretbox import create_key_file
from alignd.storage.base import InvalidKey, ObjectStore, validate_key, validate_prefix
from alignd.storage.local import LocalStore
from alignd.storage.s3 import S3Store, default_http_client
from alignd.storage.signing import UrlSigner

SIGNING_KEY_FILE = "signing.key"

__all__ = [
    "InvalidKey",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "UrlSigner",
    "signing_secret",
    "store_from_settings",
    "validate_key",
    "validate_prefix",
]


def store_from_settings(settings: Settings) -> ObjectStore:
    """The one place that maps settings to a backend, so the app, controller and CLI share a store.
    Fails fast (ValueError, Unavailable) on a misconfigured or unreachable S3 rather than at first use."""
    if settings.store == "s3":
        return _s3_store(settings)
    return LocalStore(
        settings.resolved_store_dir(),
        signer=UrlSigner(signing_secret(settings)),
        public_url=settings.resolved_public_url(),
    )


def signing_secret(settings: Settings) -> bytes:
    """ALIGND_SIGNING_KEY if set; otherwise a random key kept in data_dir/signing.key, so URLs handed
    to running trainers stay valid across restarts and every API process on the machine agrees."""
    if settings.signing_key is not None:
        return settings.signing_key.get_secret_value().encode()
    path = settings.resolved_data_dir() / SIGNING_KEY_FILE
    if not path.exists():
        create_key_file(path, secrets.token_hex(32))
    return path.read_bytes().strip()


def _s3_store(settings: Settings) -> S3Store:
    """Static keys when both are set; neither: the workload's own identity (IRSA's web identity token,
    EKS Pod Identity, ECS or EC2 instance roles, or AWS_* variables), through minio's provider chain."""
    endpoint, access_key, secret_key = settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key
    half_keyed = (access_key is None) != (secret_key is None)
    if not endpoint or half_keyed:
        given = {"ENDPOINT": endpoint} | (
            {"ACCESS_KEY": access_key, "SECRET_KEY": secret_key} if half_keyed else {}
        )
        missing = ", ".join(f"ALIGND_S3_{name}" for name, value in given.items() if not value)
        raise ValueError(
            f"ALIGND_STORE=s3 needs {missing} to be set (leave both keys unset to use the pod's IAM role)"
        )
    if access_key is None or secret_key is None:
        return S3Store(
            endpoint,
            settings.s3_bucket,
            None,
            None,
            credentials=ChainedProvider([EnvAWSProvider(), IamAwsProvider(region=settings.s3_region)]),
            region=settings.s3_region,
            secure=settings.s3_secure,
        )
    return S3Store(
        endpoint,
        settings.s3_bucket,
        access_key.get_secret_value(),
        secret_key.get_secret_value(),
        region=settings.s3_region,
        secure=settings.s3_secure,
        http_client=default_http_client(
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
            retries=settings.s3_retries,
        ),
    )
