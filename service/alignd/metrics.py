"""Prometheus metrics. Request and upload counters are updated as things happen; job counts and
trainer-reported values are read from the database at scrape time, so every replica agrees.

Under `alignd serve --workers N` the counters of all worker processes are kept in files in one
directory (prometheus_client's multiprocess mode, switched on by `PROMETHEUS_MULTIPROC_DIR`, which the
library reads when it is imported) and a scrape sums them, whichever worker answers it.
"""

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, col, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alignd.jobs.lifecycle import JobStatus
from alignd.models import JobModel, MetricModel, WebhookDeliveryModel

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where worker processes keep their counters; set by `alignd serve --workers N` before they start."""

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
                by_status.add_metric([JobStatus(status).value], count)
            queue.add_metric([], counts.get(JobStatus.queued, 0))
            running = session.exec(select(JobModel.id).where(col(JobModel.status) == JobStatus.running)).all()
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


class RequestMetrics:
    """ASGI middleware counting requests by method, route template and status, with their latency up to
    the start of the response (for a stream, its first byte).

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the rest of the
    app in a separate task and pipes the response through a memory stream: a task and a stream for every
    request, the job-status polls too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = getattr(scope["app"].state, "alignd", None) if scope["type"] == "http" else None
        if state is None:
            await self.app(scope, receive, send)
            return
        metrics: Metrics = state.metrics
        started = time.perf_counter()

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.observe(scope["method"], route, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_counted)


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
        self.swept = Counter(
            "alignd_sweeper_removed",
            "What the sweeper removed, by kind: staged (temp files of interrupted uploads), "
            "unregistered (stored files with no row), deleting (deletes it finished)",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(sessions))
        self.registry.register(WebhookCollector(sessions))
        self.scraped = self.registry
        """What `render` reports: this process's registry, or with worker processes all their counters."""
        directory = os.environ.get(MULTIPROCESS_DIR_ENV)
        if directory:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped, path=directory)
            self.scraped.register(JobCollector(sessions))
            self.scraped.register(WebhookCollector(sessions))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.scraped)
