"""The calling project's integration credentials: set, list, remove. Values go in, never out."""

from typing import cast

from fastapi import APIRouter

from alignd.api.responses import PROJECT, errors
from alignd.deps import ProjectDep, SessionDep, SettingsDep
from alignd.integrations import credentials
from alignd.integrations.credentials import TYPES
from alignd.models import IntegrationCredentialsModel
from alignd.schemas import IntegrationCredentialsObject, ListResponse, MlflowCredentials, WandbCredentials

router = APIRouter(prefix="/v1/integrations", tags=["integrations"])


def to_public(row: IntegrationCredentialsModel) -> IntegrationCredentialsObject:
    kind = cast(credentials.IntegrationType, row.type)
    return IntegrationCredentialsObject(type=kind, configured=True, updated_at=row.updated_at)


@router.get("", response_model=ListResponse[IntegrationCredentialsObject], responses=errors(*PROJECT))
def list_credentials(session: SessionDep, project: ProjectDep) -> ListResponse[IntegrationCredentialsObject]:
    """Which integrations have credentials set, one entry per type."""
    rows = credentials.configured(session, project)
    data = [
        to_public(rows[kind]) if kind in rows else IntegrationCredentialsObject(type=kind, configured=False)
        for kind in TYPES
    ]
    return ListResponse[IntegrationCredentialsObject].page(data, False)


@router.put("/wandb", response_model=IntegrationCredentialsObject, responses=errors(400, *PROJECT))
def set_wandb(
    body: WandbCredentials, session: SessionDep, settings: SettingsDep, project: ProjectDep
) -> IntegrationCredentialsObject:
    """The W&B API key jobs with a `wandb` integration log with; stored sealed, never shown again."""
    row = credentials.set_credentials(
        session=session, settings=settings, project=project, type="wandb", values=body
    )
    return to_public(row)


@router.put("/mlflow", response_model=IntegrationCredentialsObject, responses=errors(400, *PROJECT))
def set_mlflow(
    body: MlflowCredentials, session: SessionDep, settings: SettingsDep, project: ProjectDep
) -> IntegrationCredentialsObject:
    """The MLflow tracking server (and its token) jobs with an `mlflow` integration log to; stored sealed."""
    row = credentials.set_credentials(
        session=session, settings=settings, project=project, type="mlflow", values=body
    )
    return to_public(row)


@router.delete("/wandb", response_model=IntegrationCredentialsObject, responses=errors(*PROJECT))
def delete_wandb(session: SessionDep, project: ProjectDep) -> IntegrationCredentialsObject:
    """Remove the project's W&B key; jobs still mirrored with it stop, with an event on each job, once
    their retries run out."""
    credentials.delete_credentials(session=session, project=project, type="wandb")
    return IntegrationCredentialsObject(type="wandb", configured=False)


@router.delete("/mlflow", response_model=IntegrationCredentialsObject, responses=errors(*PROJECT))
def delete_mlflow(session: SessionDep, project: ProjectDep) -> IntegrationCredentialsObject:
    """Remove the project's tracking server; jobs still mirrored to it stop, with an event on each job,
    once their retries run out."""
    credentials.delete_credentials(session=session, project=project, type="mlflow")
    return IntegrationCredentialsObject(type="mlflow", configured=False)
