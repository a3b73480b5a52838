"""The one small protocol between the integrations worker and an integration type."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class IntegrationFailed(Exception):
    """An attempt failed; the message is ours (never the other system's answer nor a credential), safe to
    show in a job event."""


@dataclass(frozen=True)
class RunInfo:
    """What opening (or re-attaching to) a job's external run needs."""

    job_id: str
    external_id: str | None
    """The run's id from an earlier attempt: open that run again rather than a new one."""
    options: dict[str, Any]
    """The integration's own settings from the job request (`wandb: {...}` or `mlflow: {...}`)."""
    params: dict[str, str | int | float | bool | None]
    tags: list[str]
    created_at: int


@dataclass(frozen=True)
class Point:
    """One metric point as the trainer reported it (TRL's names; eval values carry `eval_`)."""

    step: int
    split: str
    epoch: float
    values: dict[str, float]
    created_at: int


@dataclass(frozen=True)
class Outcome:
    status: str
    """The job's final status: succeeded, failed or cancelled."""
    links: dict[str, str]
    """The final artifacts: fine-tuned model id, adapter download URL, the job's URL."""


class Sink(Protocol):
    """One job's run in another system. Every method may raise IntegrationFailed; the worker retries the
    same call later, so each must be safe to repeat (a point logged twice is harmless)."""

    def open(self, run: RunInfo) -> str:
        """Create the run, or attach to `run.external_id`; log params and tags. Returns the run's id."""
        ...

    def log(self, points: Sequence[Point]) -> None: ...

    def finish(self, outcome: Outcome) -> None:
        """Record the links and end the run with the job's status."""
        ...

    def close(self) -> None:
        """Release what this process holds for the run (threads, files), leaving the run as it is."""
        ...
