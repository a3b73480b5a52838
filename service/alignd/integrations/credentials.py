"""Per-project integration credentials: one sealed JSON object per (project, type), set and removed by
the project, read only by the integrations worker. No function here returns a value to the API."""

import json
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel
from sqlalchemy import delete
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.errors import InvalidRequest, NotFound
from alignd.models import IntegrationCredentialsModel, ProjectModel, unix_now
from alignd.secretbox import SecretBox, secret_box
from alignd.webhooks.targets import ForbiddenTarget, TargetPolicy, UnresolvedTarget

IntegrationType = Literal["wandb", "mlflow"]
TYPES: tuple[IntegrationType, ...] = ("wandb", "mlflow")


def set_credentials(
    *, session: Session, settings: Settings, project: ProjectModel, type: IntegrationType, values: BaseModel
) -> IntegrationCredentialsModel:
    """Store (or replace) the project's credentials for `type`, sealed."""
    plain = values.model_dump(exclude_none=True)
    if "tracking_uri" in plain:
        check_tracking_uri(plain["tracking_uri"], settings)
    sealed = secret_box(settings).seal(json.dumps(plain))
    row = find_credentials(session, project.id, type)
    now = unix_now()
    if row is None:
        row = IntegrationCredentialsModel(project_id=project.id, type=type, sealed=sealed)
    else:
        row.sealed, row.updated_at = sealed, now
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def check_tracking_uri(uri: str, settings: Settings) -> None:
    """An absolute http(s) URL whose host is a public address unless the admin allows it
    (ALIGND_MLFLOW_ALLOWED_HOSTS): the control plane sends requests there on the project's behalf."""
    invalid = InvalidRequest(
        "tracking_uri must be an absolute http:// or https:// URL with a host, in ASCII without spaces "
        "(e.g. https://mlflow.example.com)",
        param="tracking_uri",
        code="invalid_url",
    )
    if not uri.isascii() or any(c.isspace() or not c.isprintable() for c in uri):
        raise invalid
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        raise invalid from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid
    policy = TargetPolicy.from_entries(settings.mlflow_allowed_hosts)
    try:
        policy.resolve(uri)
    except ForbiddenTarget as exc:
        reason = str(exc).split(";", 1)[0]
        raise InvalidRequest(
            f"tracking_uri: {reason}; alignd reaches only public tracking servers unless an admin allows "
            "the host with ALIGND_MLFLOW_ALLOWED_HOSTS",
            param="tracking_uri",
            code="forbidden_url",
        ) from None
    except UnresolvedTarget:
        pass
    except UnicodeError:  # a host name IDNA cannot encode
        raise invalid from None


def configured(session: Session, project: ProjectModel) -> dict[str, IntegrationCredentialsModel]:
    rows = session.exec(
        select(IntegrationCredentialsModel).where(IntegrationCredentialsModel.project_id == project.id)
    )
    return {row.type: row for row in rows}


def delete_credentials(*, session: Session, project: ProjectModel, type: IntegrationType) -> None:
    if find_credentials(session, project.id, type) is None:
        raise NotFound(f"no {type} credentials are set for this project", param="type")
    session.execute(
        delete(IntegrationCredentialsModel).where(
            col(IntegrationCredentialsModel.project_id) == project.id,
            col(IntegrationCredentialsModel.type) == type,
        )
    )
    session.commit()


def open_credentials(session: Session, project_id: str, type: str, box: SecretBox) -> dict[str, str] | None:
    """The plaintext credentials, for the worker only; None when the project has set none."""
    row = find_credentials(session, project_id, type)
    if row is None:
        return None
    values: dict[str, str] = json.loads(box.open(row.sealed))
    return values


def find_credentials(session: Session, project_id: str, type: str) -> IntegrationCredentialsModel | None:
    return session.exec(
        select(IntegrationCredentialsModel).where(
            IntegrationCredentialsModel.project_id == project_id, IntegrationCredentialsModel.type == type
        )
    ).first()
