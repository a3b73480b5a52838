"""The outbox: delivery rows written in the same transaction as the status change that caused them.

`jobs.state.transition` calls `enqueue_job_event` before it commits a move to succeeded, failed or
cancelled. The compare-and-set there lets exactly one writer make that move, so each endpoint gets
exactly one delivery per finished job, and none when the transaction rolls back. Sending is the
dispatcher's work, later and outside the transaction, so a slow receiver never holds up a job.
"""

from sqlalchemy import select
from sqlmodel import Session, col

from alignd.models import JobModel, WebhookDeliveryModel, WebhookEndpointModel, new_id
from alignd.webhooks.events import event_body, job_event_type


def enqueue_job_event(
    session: Session, *, job_id: str, status: str, created_at: int
) -> list[WebhookDeliveryModel]:
    """Add a delivery for every endpoint of the job's project subscribed to the event of `status`.

    Adds to the caller's transaction and does not commit: the rows exist exactly when the status change
    does. Returns the rows added (none for a status without an event or a project without endpoints).
    """
    event_type = job_event_type(status)
    if event_type is None:
        return []
    project_id = select(col(JobModel.project_id)).where(col(JobModel.id) == job_id).scalar_subquery()
    endpoints = session.execute(
        select(WebhookEndpointModel).where(col(WebhookEndpointModel.project_id) == project_id)
    ).scalars()
    event_id = new_id("evt_")
    body = event_body(event_id=event_id, event_type=event_type, created_at=created_at, subject_id=job_id)
    rows = [
        WebhookDeliveryModel(
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event_type,
            subject_id=job_id,
            payload=body,
            next_attempt_at=float(created_at),
            created_at=created_at,
            updated_at=created_at,
        )
        for endpoint in endpoints
        if event_type in endpoint.events
    ]
    session.add_all(rows)
    return rows
