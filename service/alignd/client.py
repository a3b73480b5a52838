"""A small HTTP client for the CLI: the same API users call with curl or the openai SDK."""

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


class ApiError(RuntimeError):
    pass


def _api_error(response: httpx.Response) -> ApiError:
    """The error envelope's code and message, or the start of the body when it is not one."""
    try:
        error = response.json()["error"]
        return ApiError(f"{response.status_code} {error.get('code') or error['type']}: {error['message']}")
    except (ValueError, KeyError):
        return ApiError(f"{response.status_code}: {response.text[:300]}")


class Client:
    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 120
    ) -> None:
        url = base_url or os.environ.get("ALIGND_API_URL", "http://127.0.0.1:8000")
        key = api_key or os.environ.get("ALIGND_API_KEY")
        if not key:
            raise ApiError("set ALIGND_API_KEY (a project API key) or pass --api-key")
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json()

    def upload(self, path: Path) -> dict[str, Any]:
        with open(path, "rb") as handle:
            result: dict[str, Any] = self.call(
                "POST", "/v1/files", files={"file": (path.name, handle)}, data={"purpose": "fine-tune"}
            )
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
        return result

    def follow_metrics(
        self, job_id: str, *, interval: float = 0.5
    ) -> Iterator[tuple[dict[str, Any], list[Any]]]:
        """Yield (job, new train metric points) until the job ends."""
        seen = 0
        while True:
            job = self.job(job_id)
            points = self.call("GET", f"/v1/fine_tuning/jobs/{job_id}/metrics")["train"]
            yield job, points[seen:]
            seen = len(points)
            if job["status"] in TERMINAL:
                return
            time.sleep(interval)

    def download_adapter(self, job_id: str, target: Path) -> Path:
        return self.download_artifact(job_id, "adapter", target)

    def download_artifact(self, job_id: str, artifact: str, target: Path) -> Path:
        """`artifact` is adapter, merged or checkpoint/<step>; the tar.gz is streamed to `target`."""
        with self.http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/artifacts/{artifact}") as response:
            if response.status_code != 200:
                response.read()
                raise _api_error(response)
            with open(target, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target
