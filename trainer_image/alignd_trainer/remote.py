"""Managed runs: fetch the job spec, the data and the base model from the control plane (job token,
presigned URLs).

The trainer never holds storage credentials: the API hands it URLs scoped to its one job. Every call
(the control plane's and the presigned URLs') is retried under the trainer's one `RetryPolicy`.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import httpx

from alignd.contract import JobSpec, ModelFilesResponse, ResumeCheckpoint
from alignd_trainer.errors import BadInputError, InfrastructureError
from alignd_trainer.managed import ManagedJob
from alignd_trainer.retry import RetryPolicy, default_policy, send_with_retries

OBJECT_STORE_SCHEME = "s3://"
COMPLETE_MARKER = ".alignd-complete"


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _internal_get(job: ManagedJob, path: str, what: str, policy: RetryPolicy | None) -> bytes:
    url = f"{job.api_url.rstrip('/')}/internal/v1/jobs/{job.job_id}/{path}"
    response = send_with_retries(
        lambda: httpx.get(url, headers={"Authorization": f"Bearer {job.token}"}, timeout=60),
        what=f"the {what} request to the control plane at {job.api_url}",
        policy=policy or default_policy(),
    )
    if response.status_code != 200:
        raise BadInputError(
            f"control plane refused the {what} request ({response.status_code}): {response.text[:300]}"
        )
    return response.content


def fetch_spec(api_url: str, job_id: str, token: str, *, policy: RetryPolicy | None = None) -> JobSpec:
    raw = _internal_get(ManagedJob(job_id, api_url, token), "spec", "job spec", policy)
    return JobSpec.model_validate_json(raw)


def download(url: str, directory: Path, name: str, *, policy: RetryPolicy | None = None) -> Path:
    """Stream a presigned URL to disk; returns the local path."""
    target = directory / name
    _fetch(url, target, name, policy)
    return target


def _fetch(url: str, target: Path, name: str, policy: RetryPolicy | None) -> None:
    """GET `url` into `target`, from the start again on each retry (a dropped connection mid-body too)."""

    def attempt() -> httpx.Response:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            if response.status_code == 200:
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            return response

    response = send_with_retries(attempt, what=f"download of {name}", policy=policy or default_policy())
    if response.status_code != 200:
        raise InfrastructureError(f"download of {name} failed with HTTP {response.status_code}")


def localize_data(spec: JobSpec, *, policy: RetryPolicy | None = None) -> JobSpec:
    """Replace URL data locations in the spec by files downloaded into the run's output directory."""
    if not is_url(spec.training_file) and not (spec.validation_file and is_url(spec.validation_file)):
        return spec
    directory = Path(spec.output_dir) / "inputs"
    directory.mkdir(parents=True, exist_ok=True)
    update: dict[str, str] = {}
    if is_url(spec.training_file):
        update["training_file"] = str(download(spec.training_file, directory, "train.jsonl", policy=policy))
    if spec.validation_file and is_url(spec.validation_file):
        update["validation_file"] = str(
            download(spec.validation_file, directory, "validation.jsonl", policy=policy)
        )
    return spec.model_copy(update=update)


def model_cache_root(environ: Mapping[str, str]) -> Path:
    """Where downloaded base models are kept between runs: `$XDG_CACHE_HOME/alignd/models`, else
    `~/.cache/alignd/models`. Mount a volume there to share downloads between pods (the Kubernetes
    launcher mounts trainer.modelCache's claim at XDG_CACHE_HOME)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alignd" / "models"


def private_cache_root() -> Path:
    """Where a model goes when the shared cache is read-only and lacks it: the run's own HOME."""
    return Path.home() / ".alignd-models"


def localize_model(
    spec: JobSpec, job: ManagedJob | None, cache_root: Path, *, policy: RetryPolicy | None = None
) -> JobSpec:
    """A base model in object storage (`s3://bucket/prefix`) is downloaded into the cache, and the spec
    points at the local copy; any other model location is loaded from where it is."""
    if not spec.model.startswith(OBJECT_STORE_SCHEME):
        return spec
    if job is None:
        raise BadInputError(
            f"the base model {spec.model} is in object storage, which only a managed run can download "
            "(the control plane hands out the URLs); for an offline run, download it and set 'model' "
            "to its directory"
        )
    raw = _internal_get(job, "model_files", f"{spec.model} files", policy)
    listing = ModelFilesResponse.model_validate_json(raw)
    local = download_model(listing, cache_root, policy=policy, fallback_root=private_cache_root())
    return spec.model_copy(update={"model": str(local)})


def localize_checkpoint(spec: JobSpec, job: ManagedJob, *, policy: RetryPolicy | None = None) -> int | None:
    """On a machine without the run's checkpoints (a new pod after preemption, a retry elsewhere),
    download the job's latest uploaded checkpoint into `output_dir/checkpoints/`, where resuming
    finds it. Returns the step fetched, or None when there was nothing to fetch."""
    root = Path(spec.output_dir) / "checkpoints"
    if root.is_dir() and any(p.name.startswith("step-") for p in root.iterdir()):
        return None
    raw = _internal_get(job, "resume", "latest checkpoint", policy)
    point = ResumeCheckpoint.model_validate_json(raw)
    if point.step is None or not point.files:
        return None
    final = root / f"step-{point.step:08d}"
    staging = Path(tempfile.mkdtemp(dir=_made(root), prefix=".download-"))
    try:
        for item in point.files:
            destination = staging / _safe_relative(item.path)
            destination.parent.mkdir(parents=True, exist_ok=True)
            _download_atomically(item.url, destination, item.size, policy)
        with contextlib.suppress(FileExistsError, OSError):
            os.rename(staging, final)  # another rank on this machine may have finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return point.step


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def download_model(
    listing: ModelFilesResponse,
    cache_root: Path,
    *,
    policy: RetryPolicy | None = None,
    fallback_root: Path | None = None,
) -> Path:
    """Download every file of the listing into `cache_root/<key>/` and return that directory.

    The key hashes the location and each file's path, size and ETag, so changed objects land in a new
    directory and the same model is fetched once, whichever job needs it: the directory, and so the
    spec a checkpoint records, stays the same when a run resumes. Each file is written to a temporary
    name and renamed when complete, so concurrent downloads (ranks, jobs) never see half a file.
    A read-only cache (a ReadOnlyMany claim filled beforehand) without the model sends the download
    to `fallback_root`.
    """
    manifest = [listing.location, *sorted((f.path, f.size, f.etag) for f in listing.files)]
    key = hashlib.sha256(json.dumps(manifest).encode()).hexdigest()[:24]
    target = cache_root / key
    if (target / COMPLETE_MARKER).exists():
        return target
    if fallback_root is not None and not _writable(cache_root):
        target = fallback_root / key
        if (target / COMPLETE_MARKER).exists():
            return target
    for item in listing.files:
        destination = target / _safe_relative(item.path)
        if destination.is_file() and destination.stat().st_size == item.size:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        _download_atomically(item.url, destination, item.size, policy)
    (target / COMPLETE_MARKER).touch()
    return target


def _writable(directory: Path) -> bool:
    """Whether files can be made in `directory`, or in its nearest existing ancestor if it is missing."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK)


def _safe_relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or any(part in ("", ".", "..") for part in path.split("/")):
        raise InfrastructureError(f"the control plane listed a model file with an unsafe path: {path!r}")
    return relative


def _download_atomically(url: str, destination: Path, size: int, policy: RetryPolicy | None) -> None:
    fd, tmp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(fd)
    try:
        _fetch(url, Path(tmp), destination.name, policy)
        written = Path(tmp).stat().st_size
        if written != size:
            raise InfrastructureError(f"download of {destination.name} got {written} bytes of {size}")
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)
