"""MLflow runs over the tracking server's REST API (`/api/2.0/mlflow/...`), with the project's URI and
token: no global client state, and each request bounded by ALIGND_INTEGRATIONS_TIMEOUT_SECONDS."""

from collections.abc import Sequence
from typing import Any

import httpx

from alignd.integrations.base import IntegrationFailed, Outcome, Point, RunInfo

API = "/api/2.0/mlflow"
BATCH = 1000
"""MLflow takes at most 1,000 metrics (and 100 params, 100 tags) per log-batch request."""
MAX_PARAMS = 100
FINAL_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class MlflowSink:
    def __init__(self, *, credentials: dict[str, str], timeout: float) -> None:
        headers = {"Authorization": f"Bearer {credentials['token']}"} if credentials.get("token") else {}
        self._client = httpx.Client(
            base_url=credentials["tracking_uri"].rstrip("/"), headers=headers, timeout=timeout
        )
        self._run_id: str | None = None

    def open(self, run: RunInfo) -> str:
        if run.external_id is not None:
            self._run_id = run.external_id
            return run.external_id
        options = run.options
        experiment_id = self._experiment(options["experiment_name"])
        tags = {"mlflow.runName": options.get("run_name") or run.job_id, "alignd.job_id": run.job_id}
        tags |= {tag: "" for tag in run.tags} | (options.get("tags") or {})
        created = self._call(
            "POST",
            "/runs/create",
            json={
                "experiment_id": experiment_id,
                "run_name": tags["mlflow.runName"],
                "start_time": run.created_at * 1000,
                "tags": _pairs(tags),
            },
        )
        run_id = str(created["run"]["info"]["run_id"])
        params = {k: "" if v is None else str(v)[:6000] for k, v in run.params.items()}
        items = list(params.items())
        for start in range(0, len(items), MAX_PARAMS):
            chunk = dict(items[start : start + MAX_PARAMS])
            self._call("POST", "/runs/log-batch", json={"run_id": run_id, "params": _pairs(chunk)})
        self._run_id = run_id
        return run_id

    def log(self, points: Sequence[Point]) -> None:
        metrics = [
            {"key": key, "value": value, "timestamp": p.created_at * 1000, "step": p.step}
            for p in points
            for key, value in {**p.values, f"{'eval_' if p.split == 'eval' else ''}epoch": p.epoch}.items()
        ]
        for start in range(0, len(metrics), BATCH):
            self._call(
                "POST",
                "/runs/log-batch",
                json={"run_id": self._run_id, "metrics": metrics[start : start + BATCH]},
            )

    def finish(self, outcome: Outcome) -> None:
        tags = {f"alignd.{key}": value for key, value in outcome.links.items()}
        self._call("POST", "/runs/log-batch", json={"run_id": self._run_id, "tags": _pairs(tags)})
        self._call(
            "POST", "/runs/update", json={"run_id": self._run_id, "status": FINAL_STATUS[outcome.status]}
        )

    def close(self) -> None:
        self._client.close()

    def _experiment(self, name: str) -> str:
        try:
            found = self._call("GET", "/experiments/get-by-name", params={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except _NotFound:
            created = self._call("POST", "/experiments/create", json={"name": name})
            return str(created["experiment_id"])

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request; IntegrationFailed in our words (never the server's body, nor the URI or token)."""
        try:
            response = self._client.request(method, API + path, **kwargs)
        except httpx.TimeoutException:
            raise IntegrationFailed("the MLflow tracking server did not answer in time") from None
        except httpx.ConnectError:
            raise IntegrationFailed("could not connect to the MLflow tracking server") from None
        except httpx.HTTPError as exc:
            raise IntegrationFailed(f"the exchange with MLflow failed ({type(exc).__name__})") from None
        if response.status_code == 404 and path == "/experiments/get-by-name":
            raise _NotFound
        if response.status_code in (401, 403):
            raise IntegrationFailed(
                "the MLflow tracking server refused the project's credentials "
                f"(HTTP {response.status_code}); set them again with PUT /v1/integrations/mlflow"
            )
        if not response.is_success:
            raise IntegrationFailed(
                f"the MLflow tracking server answered HTTP {response.status_code} to {path}"
            )
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise IntegrationFailed(f"the MLflow tracking server's answer to {path} is not JSON") from None
        return body


class _NotFound(Exception):
    pass


def _pairs(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in values.items()]
