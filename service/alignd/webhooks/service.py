"""Webhook endpoints and their deliveries, as a project sees them (another project's are not found).

An endpoint's URL must lead to a public address (`targets`); its signing secret is stored sealed
(`alignd.secretbox`) and shown in plaintext once, in the answer that creates it.
"""

from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import delete, func, update
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select

from alignd.config import Settings
from alignd.errors import InvalidRequest, NotFound
from alignd.models import ProjectModel, WebhookAttemptModel, WebhookDeliveryModel, WebhookEndpointModel
from alignd.pagination import newest_first
from alignd.secretbox import SEALED_PREFIX, SecretBox, secret_box
from alignd.webhooks.events import EVENT_TYPES
from alignd.webhooks.signing import generate_secret
from alignd.webhooks.targets import ForbiddenTarget, TargetPolicy, UnresolvedTarget

MAX_URL_CHARS = 2048
MAX_ENDPOINTS_PER_PROJECT = 20


def check_url(url: str) -> str:
    """The URL as given, if it is an absolute http(s) URL with a host; InvalidRequest saying why not."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidRequest(
            f"url is longer than {MAX_URL_CHARS} characters", param="url", code="invalid_url"
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidRequest(
            "url must not contain spaces or control characters", param="url", code="invalid_url"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise InvalidRequest(
            f"url {url!r} is not a valid URL: {exc}", param="url", code="invalid_url"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(
            f"url {url!r} must start with https:// or http://", param="url", code="invalid_url"
        )
    if not parts.hostname:
        raise InvalidRequest(f"url {url!r} has no host", param="url", code="invalid_url")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidRequest(
            f"url host {parts.hostname!r} is not a valid host name", param="url", code="invalid_url"
        ) from None
    return url


def check_events(events: Sequence[str] | None) -> list[str]:
    """The event types to subscribe to (all when None), deduplicated in our order."""
    if events is None:
        return list(EVENT_TYPES)
    if not events:
        raise InvalidRequest(
            "events is empty; leave it out to receive every event, or name some of: "
            + ", ".join(EVENT_TYPES),
            param="events",
        )
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(
            f"unknown event type {unknown[0]!r}; webhooks can receive: " + ", ".join(EVENT_TYPES),
            param="events",
        )
    return [e for e in EVENT_TYPES if e in events]


def check_target(url: str, targets: TargetPolicy) -> None:
    """InvalidRequest if `url` leads to an address webhooks may not reach. A name that does not resolve
    (yet) is accepted: every attempt checks again, and fails with `dns_error` until it resolves."""
    try:
        targets.resolve(url)
    except ForbiddenTarget as exc:
        raise InvalidRequest(str(exc), param="url", code="forbidden_url") from None
    except UnresolvedTarget:
        pass


def create_endpoint(
    *, session: Session, project: ProjectModel, url: str, events: Sequence[str] | None, settings: Settings
) -> tuple[WebhookEndpointModel, str]:
    """A new endpoint and its fresh secret in plaintext: the caller shows it once; the row holds it sealed."""
    check_target(check_url(url), TargetPolicy.from_settings(settings))
    secret = generate_secret()
    endpoint = WebhookEndpointModel(
        project_id=project.id,
        url=url,
        events=check_events(events),
        secret=secret_box(settings).seal(secret),
    )
    count = session.exec(
        select(func.count())
        .select_from(WebhookEndpointModel)
        .where(WebhookEndpointModel.project_id == project.id)
    ).one()
    if count >= MAX_ENDPOINTS_PER_PROJECT:
        raise InvalidRequest(
            f"a project has at most {MAX_ENDPOINTS_PER_PROJECT} webhook endpoints; delete one first",
            code="too_many_webhooks",
        )
    session.add(endpoint)
    session.commit()
    return endpoint, secret


def seal_plaintext_secrets(*, sessions: sessionmaker[Session], box: SecretBox) -> int:
    """Seal the secrets of endpoints stored before sealing existed; how many were sealed.

    Each row is compare-and-set on its old value, so running this twice, or in two processes at once,
    seals each secret once.
    """
    with sessions() as session:
        rows = session.execute(
            select(col(WebhookEndpointModel.id), col(WebhookEndpointModel.secret)).where(
                ~col(WebhookEndpointModel.secret).startswith(SEALED_PREFIX)
            )
        ).all()
        sealed = 0
        for endpoint_id, stored in rows:
            result = session.execute(
                update(WebhookEndpointModel)
                .where(
                    col(WebhookEndpointModel.id) == endpoint_id, col(WebhookEndpointModel.secret) == stored
                )
                .values(secret=box.seal(stored))
                .execution_options(synchronize_session=False)
            )
            sealed += result.rowcount  # type: ignore[attr-defined]
        session.commit()
    return sealed


def get_endpoint(*, session: Session, project: ProjectModel, endpoint_id: str) -> WebhookEndpointModel:
    endpoint = session.get(WebhookEndpointModel, endpoint_id)
    if endpoint is None or endpoint.project_id != project.id:
        raise NotFound(f"no webhook endpoint with id {endpoint_id!r}", param="webhook_id")
    return endpoint


def list_endpoints(
    *, session: Session, project: ProjectModel, after: str | None, limit: int
) -> tuple[list[WebhookEndpointModel], bool]:
    """Newest first; `after` is the id of the last endpoint of the previous page."""
    anchor = get_endpoint(session=session, project=project, endpoint_id=after) if after else None
    query = newest_first(
        select(WebhookEndpointModel).where(col(WebhookEndpointModel.project_id) == project.id),
        WebhookEndpointModel,
        anchor,
    )
    rows = list(session.exec(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_endpoint(*, session: Session, project: ProjectModel, endpoint_id: str) -> None:
    """Delete an endpoint and its deliveries; deliveries being sent right now are not recorded."""
    endpoint = get_endpoint(session=session, project=project, endpoint_id=endpoint_id)
    session.execute(delete(WebhookEndpointModel).where(col(WebhookEndpointModel.id) == endpoint.id))
    session.commit()


def list_deliveries(
    *, session: Session, project: ProjectModel, endpoint_id: str, after: str | None, limit: int
) -> tuple[list[tuple[WebhookDeliveryModel, list[WebhookAttemptModel]]], bool]:
    """An endpoint's deliveries newest first, each with its attempts oldest first."""
    endpoint = get_endpoint(session=session, project=project, endpoint_id=endpoint_id)
    anchor = None
    if after is not None:
        anchor = session.get(WebhookDeliveryModel, after)
        if anchor is None or anchor.endpoint_id != endpoint.id:
            raise NotFound(f"no delivery with id {after!r} for this webhook endpoint", param="after")
    query = newest_first(
        select(WebhookDeliveryModel).where(col(WebhookDeliveryModel.endpoint_id) == endpoint.id),
        WebhookDeliveryModel,
        anchor,
    )
    rows = list(session.exec(query.limit(limit + 1)))
    page = rows[:limit]
    attempts: dict[str, list[WebhookAttemptModel]] = {row.id: [] for row in page}
    if page:
        for attempt in session.exec(
            select(WebhookAttemptModel)
            .where(col(WebhookAttemptModel.delivery_id).in_(list(attempts)))
            .order_by(col(WebhookAttemptModel.attempt), col(WebhookAttemptModel.id))
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(row, attempts[row.id]) for row in page], len(rows) > limit
