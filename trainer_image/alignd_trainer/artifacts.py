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
from alignd_trainer.retry import RetryPolicy, default_policy, send_with_retries


class ArtifactSink(Protocol):
    def publish(self, local_dir: Path, artifact: str) -> str:
        """Make `local_dir` durable as `artifact` (adapter, model, checkpoints/step-N); returns where."""
        ...


class LocalSink:
    def publish(self, local_dir: Path, artifact: str) -> str:
        return str(local_dir)


class HttpUploadSink:
    """Asks the control plane for presigned PUT URLs and uploads each file; both kinds of call are
    retried under the trainer's `RetryPolicy`, so a control-plane blip does not cost the job a retry."""

    def __init__(
        self,
        api_url: str,
        job_id: str,
        token: str,
        *,
        timeout: float = 300.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.endpoint = f"{api_url.rstrip('/')}/internal/v1/jobs/{job_id}/upload_urls"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout
        self.policy = policy or default_policy()

    def publish(self, local_dir: Path, artifact: str) -> str:
        files = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*") if p.is_file())
        plan = self._upload_urls(UploadUrlsRequest(artifact=artifact, files=files))
        for name in files:
            self._put(local_dir / name, plan.urls[name])
        return plan.prefix

    def _upload_urls(self, request: UploadUrlsRequest) -> UploadUrlsResponse:
        response = send_with_retries(
            lambda: httpx.post(
                self.endpoint,
                content=request.model_dump_json(),
                headers=self.headers | {"Content-Type": "application/json"},
                timeout=60,
            ),
            what=f"the upload URL request for {request.artifact}",
            policy=self.policy,
        )
        if response.status_code != 200:
            raise InfrastructureError(
                f"control plane refused upload URLs for {request.artifact} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        return UploadUrlsResponse.model_validate_json(response.content)

    def _put(self, path: Path, url: str) -> None:
        def attempt() -> httpx.Response:
            size = str(path.stat().st_size)
            with open(path, "rb") as body:
                return httpx.put(url, content=body, timeout=self.timeout, headers={"Content-Length": size})

        response = send_with_retries(attempt, what=f"upload of {path.name}", policy=self.policy)
        if response.status_code not in (200, 201, 204):
            raise InfrastructureError(
                f"upload of {path.name} failed with HTTP {response.status_code}: {response.text[:200]}"
            )


def sink_from_env(environ: Mapping[str, str]) -> ArtifactSink:
    job = managed_job(environ)
    return LocalSink() if job is None else HttpUploadSink(job.api_url, job.job_id, job.token)
