"""Managed runs: fetch the job spec and the data from the control plane (job token, presigned URLs).

The trainer never holds storage credentials: the API hands it URLs scoped to its one job.
"""

from pathlib import Path

import httpx

from alignd.contract import JobSpec
from alignd_trainer.errors import BadInputError, InfrastructureError


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def fetch_spec(api_url: str, job_id: str, token: str) -> JobSpec:
    url = f"{api_url.rstrip('/')}/internal/v1/jobs/{job_id}/spec"
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise InfrastructureError(f"cannot reach the control plane at {api_url}: {exc}") from None
    if response.status_code >= 500:
        raise InfrastructureError(f"control plane answered {response.status_code} for the job spec")
    if response.status_code != 200:
        raise BadInputError(
            f"control plane refused the job spec request ({response.status_code}): {response.text[:300]}"
        )
    return JobSpec.model_validate_json(response.content)


def download(url: str, directory: Path, name: str) -> Path:
    """Stream a presigned URL to disk; returns the local path."""
    target = directory / name
    try:
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as response:
            if response.status_code != 200:
                raise InfrastructureError(f"download of {name} failed with HTTP {response.status_code}")
            with open(target, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise InfrastructureError(f"download of {name} failed: {exc}") from None
    return target


def localize_data(spec: JobSpec) -> JobSpec:
    """Replace URL data locations in the spec by files downloaded into the run's output directory."""
    if not is_url(spec.training_file) and not (spec.validation_file and is_url(spec.validation_file)):
        return spec
    directory = Path(spec.output_dir) / "inputs"
    directory.mkdir(parents=True, exist_ok=True)
    update: dict[str, str] = {}
    if is_url(spec.training_file):
        update["training_file"] = str(download(spec.training_file, directory, "train.jsonl"))
    if spec.validation_file and is_url(spec.validation_file):
        update["validation_file"] = str(download(spec.validation_file, directory, "validation.jsonl"))
    return spec.model_copy(update=update)
