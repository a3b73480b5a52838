"""A job's integrations at creation: checked against what the project and server can do, then one
`IntegrationRunModel` per entry, added in the job's own transaction."""

import importlib.util
from collections.abc import Sequence

from sqlmodel import Session

from alignd.config import Settings
from alignd.errors import InvalidRequest
from alignd.integrations.credentials import find_credentials
from alignd.models import IntegrationRunModel, ProjectModel, unix_now
from alignd.schemas import Integration

EXTRA_HINT = "install the server with the `integrations` extra (pip install 'alignd[integrations]')"


def check_integrations(
    session: Session, settings: Settings, project: ProjectModel, integrations: Sequence[Integration]
) -> None:
    """InvalidRequest naming the entry unless each can run: one per type, the package present, and the
    project's credentials set where the type needs them."""
    seen: set[str] = set()
    for index, entry in enumerate(integrations):
        param = f"integrations[{index}]"
        if entry.type in seen:
            raise InvalidRequest(f"{param}: a job takes one {entry.type} integration", param=param)
        seen.add(entry.type)
        if entry.type == "wandb" and importlib.util.find_spec("wandb") is None:
            raise InvalidRequest(
                f"{param}: this server cannot log to W&B: {EXTRA_HINT}",
                param=param,
                code="integration_unavailable",
            )
        needs_credentials = entry.type == "mlflow" or settings.wandb_mode == "online"
        if needs_credentials and find_credentials(session, project.id, entry.type) is None:
            what = "W&B API key" if entry.type == "wandb" else "MLflow tracking server"
            raise InvalidRequest(
                f"{param}: this project has no {what} set; set it with PUT /v1/integrations/{entry.type}",
                param=param,
                code="integration_not_configured",
            )


def add_runs(session: Session, job_id: str, integrations: Sequence[Integration]) -> None:
    """One run row per integration, due now; the caller commits them with the job."""
    now = unix_now()
    session.add_all(
        IntegrationRunModel(
            job_id=job_id,
            type=entry.type,
            options=entry.model_dump(mode="json"),
            next_attempt_at=float(now),
            created_at=now,
            updated_at=now,
        )
        for entry in integrations
    )
