"""Webhook endpoints of the calling project, and the delivery attempts of each."""

import json
from typing import Annotated

from fastapi import APIRouter, Query

from alignd.api.responses import PROJECT, errors
from alignd.deps import ProjectDep, SessionDep, SettingsDep
from alignd.models import WebhookAttemptModel, WebhookDeliveryModel, WebhookEndpointModel
from alignd.schemas import (
    ListResponse,
    WebhookAttemptObject,
    WebhookDeliveryObject,
    WebhookEndpointCreate,
    WebhookEndpointDeleted,
    WebhookEndpointObject,
)
from alignd.webhooks import service
from alignd.webhooks.failures import public_error

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Limit = Annotated[int, Query(ge=1, le=100)]


def to_public(row: WebhookEndpointModel, *, secret: str | None = None) -> WebhookEndpointObject:
    return WebhookEndpointObject(
        id=row.id,
        url=row.url,
        events=row.events,
        created_at=row.created_at,
        secret=secret,
    )


def delivery_to_public(
    row: WebhookDeliveryModel, attempts: list[WebhookAttemptModel]
) -> WebhookDeliveryObject:
    return WebhookDeliveryObject(
        id=row.id,
        webhook_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        data=json.loads(row.payload)["data"],
        status=row.status,
        attempt_count=row.attempts,
        next_attempt_at=int(row.next_attempt_at) if row.next_attempt_at is not None else None,
        last_status_code=row.last_status_code,
        last_error=public_error(row.last_error, row.last_status_code),
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        attempts=[
            WebhookAttemptObject(
                attempt=a.attempt,
                created_at=a.created_at,
                duration_ms=a.duration_ms,
                status_code=a.status_code,
                error=public_error(a.error, a.status_code),
            )
            for a in attempts
        ],
    )


@router.post("", response_model=WebhookEndpointObject, responses=errors(400, *PROJECT))
def create(
    body: WebhookEndpointCreate, session: SessionDep, project: ProjectDep, settings: SettingsDep
) -> WebhookEndpointObject:
    """Register an endpoint; the answer carries its signing secret, the only time it is shown. A URL that
    leads to a loopback, private, link-local or other non-public address is a 400."""
    row, secret = service.create_endpoint(
        session=session, project=project, url=body.url, events=body.events, settings=settings
    )
    return to_public(row, secret=secret)


@router.get("", response_model=ListResponse[WebhookEndpointObject], responses=errors(400, *PROJECT))
def list_endpoints(
    session: SessionDep, project: ProjectDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[WebhookEndpointObject]:
    rows, has_more = service.list_endpoints(session=session, project=project, after=after, limit=limit)
    return ListResponse[WebhookEndpointObject].page([to_public(r) for r in rows], has_more)


@router.get("/{webhook_id}", response_model=WebhookEndpointObject, responses=errors(*PROJECT))
def retrieve(webhook_id: str, session: SessionDep, project: ProjectDep) -> WebhookEndpointObject:
    return to_public(service.get_endpoint(session=session, project=project, endpoint_id=webhook_id))


@router.delete("/{webhook_id}", response_model=WebhookEndpointDeleted, responses=errors(*PROJECT))
def delete(webhook_id: str, session: SessionDep, project: ProjectDep) -> WebhookEndpointDeleted:
    service.delete_endpoint(session=session, project=project, endpoint_id=webhook_id)
    return WebhookEndpointDeleted(id=webhook_id)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=ListResponse[WebhookDeliveryObject],
    responses=errors(400, *PROJECT),
)
def deliveries(
    webhook_id: str, session: SessionDep, project: ProjectDep, after: str | None = None, limit: Limit = 20
) -> ListResponse[WebhookDeliveryObject]:
    """Newest first, each with its attempts: status code or error, and when the next one is due."""
    rows, has_more = service.list_deliveries(
        session=session, project=project, endpoint_id=webhook_id, after=after, limit=limit
    )
    data = [delivery_to_public(row, attempts) for row, attempts in rows]
    return ListResponse[WebhookDeliveryObject].page(data, has_more)
