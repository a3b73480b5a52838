"""Webhook event types and the event body (OpenAI's shape), with no database or web imports."""

import json
from typing import Literal, get_args

EventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
"""What an endpoint can subscribe to, OpenAI's names; an endpoint created without `events` gets all."""


def job_event_type(status: str) -> str | None:
    """The event a job entering `status` emits, if any."""
    event_type = f"fine_tuning.job.{status}"
    return event_type if event_type in EVENT_TYPES else None


def event_body(*, event_id: str, event_type: str, created_at: int, subject_id: str) -> str:
    """The event as JSON, serialised once: every endpoint and every retry gets these bytes.

    {"id": "evt_...", "object": "event", "type": "fine_tuning.job.succeeded", "created_at": 1750000000,
     "data": {"id": "ftjob-..."}}
    """
    payload = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": created_at,
        "data": {"id": subject_id},
    }
    return json.dumps(payload, separators=(",", ":"))
