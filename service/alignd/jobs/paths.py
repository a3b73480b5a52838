"""Which storage keys a job's token may name: only keys under the job's own prefix, `jobs/{job_id}/`.

A trainer reports where it uploaded a checkpoint and asks where to upload its files. Those paths come
back later as presigned URLs (`/internal/v1/jobs/{id}/resume`) and as archives (the owner's checkpoint
download), so a path outside the job would hand the trainer, or the job's owner, objects of another job
or project. The check is on the text alone, before any store call, and it refuses rather than repairs:
no `.`, `..` or empty segments, no leading `/`, only key characters, and the first two segments exactly
`jobs` and the job id (so job `ftjob-1` cannot name `jobs/ftjob-10/...`).
"""

from alignd.errors import InvalidRequest
from alignd.storage.base import InvalidKey, validate_key

CODE = "path_outside_job"


def job_root(job_id: str) -> str:
    return f"jobs/{job_id}/"


def confined_key(job_id: str, path: str, *, field: str) -> str:
    """`path` (one trailing `/` allowed) as a key strictly under `jobs/{job_id}/`.

    Raises InvalidRequest naming `field` when it is not a well-formed key under that prefix."""
    key = path.removesuffix("/")
    try:
        validate_key(key)
    except InvalidKey as exc:
        raise _outside(job_id, path, field, exc.message) from None
    segments = key.split("/")
    if len(segments) < 3 or segments[0] != "jobs" or segments[1] != job_id:
        raise _outside(job_id, path, field, "it lies outside that prefix")
    return key


def is_confined(job_id: str, path: str) -> bool:
    try:
        confined_key(job_id, path, field="path")
    except InvalidRequest:
        return False
    return True


def _outside(job_id: str, path: str, field: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"{field} {path[:200]!r} is not a path under this job's storage prefix {job_root(job_id)}: {why}",
        param=field,
        code=CODE,
    )
