"""Where checkpoints and final weights go once written locally.

Offline runs keep them where they are. Managed runs upload them through presigned PUT URLs the
control plane hands out, so the trainer never holds storage credentials (DESIGN.md section 3).
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import httpx

from alignd.contract import UploadUrlsRequest, UploadUrlsResponse
from alignd_trainer.errors import InfrastructureError
from alignd_trainer.managed import managed_job

UPLOAD_ATTEMPTS = 3


class ArtifactSink(Protocol):
    def publish(self, local_dir: Path, artifact: str) -> str:
        """Make `local_dir` durable as `artifact` (adapter, model, checkpoints/step-N); returns where."""
        ...


class LocalSink:
    def publish(self, local_dir: Path, artifact: str) -> str:
        return str(local_dir)


class HttpUploadSink:
    def __init__(self, api_url: str, job_id: str, token: str, *, timeout: float = 300.0) -> None:
        self.endpoint = f"{api_url.rstrip('/')}/internal/v1/jobs/{job_id}/upload_urls"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout

    def publish(self, local_dir: Path, artifact: str) -> str:
        files = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*") if p.is_file())
        plan = self._upload_urls(UploadUrlsRequest(artifact=artifact, files=files))
        for name in files:
            self._put(local_dir / name, plan.urls[name])
        return plan.prefix

    def _upload_urls(self, request: UploadUrlsRequest) -> UploadUrlsResponse:
        try:
            response = httpx.post(
                self.endpoint,
                content=request.model_dump_json(),
                headers=self.headers | {"Content-Type": "application/json"},
                timeout=60,
            )
        except httpx.HTTPError as exc:
            raise InfrastructureError(f"cannot get upload URLs for {request.artifact}: {exc}") from None
        if response.status_code != 200:
            raise InfrastructureError(
                f"control plane refused upload URLs for {request.artifact} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        return UploadUrlsResponse.model_validate_json(response.content)

    def _put(self, path: Path, url: str) -> None:
        last = ""
        for _ in range(UPLOAD_ATTEMPTS):
            try:
                with open(path, "rb") as body:
                    response = httpx.put(
                        url,
                        content=body,
                        timeout=self.timeout,
                        headers={"Content-Length": str(path.stat().st_size)},
                    )
                if response.status_code in (200, 201, 204):
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc)
        raise InfrastructureError(f"upload of {path.name} failed after {UPLOAD_ATTEMPTS} attempts: {last}")


def sink_from_env(environ: Mapping[str, str]) -> ArtifactSink:
    job = managed_job(environ)
    return LocalSink() if job is None else HttpUploadSink(job.api_url, job.job_id, job.token)
