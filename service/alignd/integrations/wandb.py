"""W&B runs through the `wandb` package (the `integrations` extra), imported when a run is opened.

The run's id is the job's id, so an attempt after a restart resumes the same run. Online, runs use the
project's API key (and ALIGND_WANDB_BASE_URL for a self-hosted server); offline, they are written under
data_dir/wandb, for `wandb sync` later. Console capture, system stats, git and code saving are off: the
run is the job's, not this server process's.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignd.integrations.base import IntegrationFailed, Outcome, Point, RunInfo

EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 1}


class WandbSink:
    def __init__(
        self,
        *,
        credentials: dict[str, str] | None,
        mode: str,
        base_url: str | None,
        directory: Path,
        timeout: float,
    ) -> None:
        self._api_key = (credentials or {}).get("api_key")
        self._mode = mode
        self._base_url = base_url
        self._directory = directory
        self._timeout = timeout
        self._run: Any = None

    def open(self, run: RunInfo) -> str:
        try:
            import wandb  # the optional `integrations` extra
        except ImportError:
            raise IntegrationFailed("this server has no `wandb` package (the `integrations` extra)") from None
        options = run.options
        self._directory.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "mode": self._mode,
            "console": "off",
            "x_disable_stats": True,
            "x_disable_meta": True,
            "disable_git": True,
            "save_code": False,
            "silent": True,
            "init_timeout": self._timeout,
        }
        if self._api_key is not None:
            settings["api_key"] = self._api_key
        if self._base_url is not None:
            settings["base_url"] = self._base_url
        try:
            self._run = wandb.init(
                project=options["project"],
                entity=options.get("entity"),
                name=options.get("name") or run.job_id,
                id=run.job_id,
                resume="allow",
                tags=[*(options.get("tags") or []), *run.tags],
                config=run.params,
                dir=str(self._directory),
                reinit="create_new",
                settings=wandb.Settings(**settings),
            )
        except Exception as exc:  # wandb raises many kinds; the message may quote the server
            raise IntegrationFailed(f"W&B did not start the run ({type(exc).__name__})") from None
        return run.job_id

    def log(self, points: Sequence[Point]) -> None:
        try:
            for point in points:
                epoch = "eval_epoch" if point.split == "eval" else "epoch"
                self._run.log({**point.values, epoch: point.epoch}, step=point.step)
        except Exception as exc:
            raise IntegrationFailed(f"W&B did not take the metrics ({type(exc).__name__})") from None

    def finish(self, outcome: Outcome) -> None:
        try:
            self._run.summary.update({"alignd/status": outcome.status, **outcome.links})
            self._run.finish(exit_code=EXIT_CODES[outcome.status])
        except Exception as exc:
            raise IntegrationFailed(f"W&B did not finish the run ({type(exc).__name__})") from None
        self._run = None

    def close(self) -> None:
        """A run left open is finished by wandb when this process exits; drop our handle only."""
        self._run = None
