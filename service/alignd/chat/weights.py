"""Model files on local disk for chat: a job's trained weights and base models kept in S3 are
downloaded once into the chat cache (one directory per job, or per base location), published by an
atomic rename under a file lock, so concurrent requests and server processes download them once."""

import fcntl
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import httpx

from alignd.errors import NotFound
from alignd.jobs.paths import job_root
from alignd.registry import S3_SCHEME, model_files
from alignd.storage import ObjectStore

URL_SECONDS = 3600
WEIGHT_ARTIFACTS = ("adapter", "model")
"""Where a job's trained weights live under `jobs/{id}/`: a LoRA adapter, or a full job's weights."""


def job_weights(store: ObjectStore, job_id: str, cache_root: Path) -> Path:
    """The local copy of a succeeded job's trained weights (an adapter or full-weight directory)."""
    target = cache_root / "jobs" / job_id
    return _published(target, lambda tmp: _copy_job_weights(store, job_id, tmp))


def base_model(store: ObjectStore, location: str, cache_root: Path) -> str:
    """What transformers loads a base from: a directory as it is, a hub id as it is, and an s3:// prefix
    downloaded once into the cache."""
    if not location.startswith(S3_SCHEME):
        return location
    digest = hashlib.sha256(location.encode()).hexdigest()[:24]
    target = cache_root / "bases" / digest
    return str(_published(target, lambda tmp: _download_base(store, location, tmp)))


def _published(target: Path, fill: Callable[[Path], None]) -> Path:
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # another request or process finished it while this one waited
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            fill(tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_job_weights(store: ObjectStore, job_id: str, into: Path) -> None:
    for artifact in WEIGHT_ARTIFACTS:
        prefix = f"{job_root(job_id)}{artifact}/"
        keys = store.list(prefix)
        if keys:
            for key in keys:
                with _local(into, key[len(prefix) :]).open("wb") as out:
                    for chunk in store.iter_bytes(key):
                        out.write(chunk)
            return
    raise NotFound(f"job {job_id} succeeded but its trained weights are not in the store", param="model")


def _download_base(store: ObjectStore, location: str, into: Path) -> None:
    listing = model_files(store, location, expires_seconds=URL_SECONDS)
    with httpx.Client(timeout=60) as client:
        for file in listing.files:
            with client.stream("GET", file.url) as response, _local(into, file.path).open("wb") as out:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    out.write(chunk)


def _local(root: Path, relative: str) -> Path:
    """`root/relative`, refusing names that would leave `root` (store keys are validated, but a cache
    directory is no place to trust that)."""
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or relative.startswith("/"):
        raise NotFound(f"the stored file name {relative!r} cannot be cached", param="model")
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
