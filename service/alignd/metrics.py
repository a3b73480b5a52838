"""Prometheus metrics. Request and upload counters are updated as things happen; job counts and
trainer-reported values are read from the database at scrape time, so every replica agrees."""

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select

from alignd.models import JobModel, MetricModel, WebhookDeliveryModel

TRAINER_VALUES = {
    "loss": "alignd_trainer_loss",
    "tokens_per_second": "alignd_trainer_tokens_per_second",
    "rewards/margins": "alignd_trainer_reward_margin",
}


class JobCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("alignd_jobs", "Jobs by status", labels=["status"])
        queue = GaugeMetricFamily("alignd_queue_depth", "Jobs waiting to be launched")
        families = {
            name: GaugeMetricFamily(
                metric, f"Last trainer-reported {name} of each running job", labels=["job_id"]
            )
            for name, metric in TRAINER_VALUES.items()
        }
        with self.sessions() as session:
            counts = dict(session.exec(select(JobModel.status, func.count()).group_by(JobModel.status)).all())
            for status, count in counts.items():
                by_status.add_metric([status], count)
            queue.add_metric([], counts.get("queued", 0))
            running = session.exec(select(JobModel.id).where(JobModel.status == "running")).all()
            for job_id in running:
                last = session.exec(
                    select(MetricModel)
                    .where(MetricModel.job_id == job_id, MetricModel.split == "train")
                    .order_by(col(MetricModel.step).desc())
                    .limit(1)
                ).first()
                for name, family in families.items():
                    if last is not None and name in last.values:
                        family.add_metric([job_id], last.values[name])
        yield by_status
        yield queue
        yield from families.values()


class WebhookCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("alignd_webhook_deliveries_pending", "Webhook deliveries not yet sent")
        with self.sessions() as session:
            count = session.exec(
                select(func.count())
                .select_from(WebhookDeliveryModel)
                .where(WebhookDeliveryModel.status == "pending")
            ).one()
        pending.add_metric([], count)
        yield pending


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alignd_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "alignd_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.upload_bytes = Counter(
            "alignd_upload_bytes", "Bytes of accepted uploads", registry=self.registry
        )
        self.controller_seconds = Histogram(
            "alignd_controller_pass_seconds", "Duration of one reconcile pass", registry=self.registry
        )
        self.webhook_deliveries = Counter(
            "alignd_webhook_deliveries",
            "Webhook delivery attempts by event type and outcome (delivered, retrying, failed)",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(sessions))
        self.registry.register(WebhookCollector(sessions))

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        self.latency.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    def render(self) -> bytes:
        return generate_latest(self.registry)
